"""The supervised loop: encoders + a fusion head trained on a ``task: {type: classify}`` config.

``train_classifier(cfg, run_dir)`` checks the data and the labels of every split first (an unseen class
in val or test stops the run before anything is written), builds a :class:`Classifier` (optionally
starting from the encoders of a trained run, optionally frozen), and runs AdamW with warm-up + cosine
decay. Each step is::

    batch, y = train_set.batch(idx), targets[idx]
    embeddings = model.embed(batch)                          # {modality: [B, D]}
    present = policy.mask(batch.present, generator)          # modality dropout (never every modality)
    out = model.head(embeddings, present)                    # FusionOutput: logits [B, C]
    loss = model.head.loss(out, y, criterion)                # + the head's own terms (MultiModN steps)
    policy.backward(loss, ctx); policy.after_backward(ctx)   # balance hooks; default: loss.backward()
    clip; optimizer.step(); scheduler.step()

Validation (accuracy, macro-F1 on ``val``), checkpoints, the metrics log and early stopping happen
between steps, through the same callbacks as the contrastive trainer; a run resumes exactly. At the end
the model is saved to ``run_dir/model`` and, with ``evaluate``, scored on ``test`` into ``metrics.json``
(overall and for every non-empty subset of modalities).

With several tasks (``task.label: [shape, colour]``) the head's logits hold every task's classes side by
side, the criterion is the mean of the tasks' criteria (:func:`task_criterion`), and validation logs the
means over tasks (``val/accuracy``, used by early stopping) and each task's own (``val/shape/accuracy``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from omnibind.config import RunConfig
from omnibind.data.loading import Splits, build_kinds, build_splits, save_skipped
from omnibind.data.streaming import epoch_order
from omnibind.errors import OmnibindError
from omnibind.evaluation.classification import accuracy, evaluate_classifier
from omnibind.fusion.base import Criterion
from omnibind.fusion.classifier import Classifier
from omnibind.fusion.labels import LabelTask, encode_targets, fit_tasks, label_tasks, split_targets
from omnibind.io import write_json_atomic, write_text_atomic
from omnibind.training.balance import BalancePolicy, StepContext, create_policies, modality_groups
from omnibind.training.callbacks import Callback, MetricsLog, ProgressBar, read_history
from omnibind.training.init import adopt_init
from omnibind.training.loop_state import LoopState
from omnibind.training.trainer import check_run_dir


@dataclass
class ClassifyResult:
    """What a finished supervised run produced."""

    run_dir: Path
    model: Classifier
    steps: int
    stopped_early: bool
    test: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)


def criterion_for(multilabel: bool) -> Criterion:
    """Per-item loss: cross-entropy over classes, or the mean binary cross-entropy of each class's sigmoid."""
    if multilabel:
        return lambda logits, y: F.binary_cross_entropy_with_logits(logits, y, reduction="none").mean(dim=1)
    return lambda logits, y: F.cross_entropy(logits, y, reduction="none")


def task_criterion(tasks: list[LabelTask]) -> Criterion:
    """Per-item loss of a classifier's tasks: :func:`criterion_for` of one task, or the mean over tasks.

    With several tasks the logits are ``[B, sum C_k]`` and the targets ``float[B, sum C_k]`` (one-hot or
    multi-hot per task, see :func:`~omnibind.fusion.labels.encode_targets`); each task's criterion sees its
    own columns. The mean, not the sum, keeps the loss on the scale of one task, so a learning rate tuned
    for one task still fits.
    """
    if len(tasks) == 1:
        return criterion_for(tasks[0].multilabel)
    parts = [(t.columns, t.multilabel, criterion_for(t.multilabel)) for t in tasks]

    def per_item(logits: Tensor, y: Tensor) -> Tensor:
        losses = [
            loss(logits[:, cols], y[:, cols] if multi else y[:, cols].argmax(dim=1))
            for cols, multi, loss in parts
        ]
        return torch.stack(losses).mean(dim=0)  # [B]

    return per_item


def _accuracy(tasks: list[LabelTask], logits: Tensor, y: Tensor) -> float:
    """Training accuracy of one task, or the mean over tasks."""
    if len(tasks) == 1:
        return accuracy(logits, y)
    truth = split_targets(y, tasks)
    return sum(accuracy(logits[:, t.columns], truth[t.name]) for t in tasks) / len(tasks)


def _val_metrics(scores: dict[str, Any]) -> dict[str, float]:
    """``val/accuracy``, ... (means over tasks), plus ``val/<task>/accuracy``, ... with several tasks."""
    sections = [("val", scores["overall"])]
    sections += [(f"val/{name}", t["overall"]) for name, t in scores.get("tasks", {}).items()]
    return {
        f"{prefix}/{k}": float(v)
        for prefix, values in sections
        for k, v in values.items()
        if v is not None and k != "n"
    }


def _backward(policies: list[BalancePolicy], loss: Tensor, ctx: StepContext) -> None:
    """The one policy that computes gradients its own way does so; otherwise a plain backward."""
    custom = [p for p in policies if type(p).backward is not BalancePolicy.backward]
    if len(custom) > 1:
        raise OmnibindError("at most one balance method may compute the gradients itself")
    (custom[0] if custom else BalancePolicy()).backward(loss, ctx)


def train_classifier(
    cfg: RunConfig,
    run_dir: str | Path,
    resume: bool = False,
    evaluate: bool = True,
    callbacks: list[Callback] | None = None,
    splits: Splits | None = None,
) -> ClassifyResult:
    """Train a :class:`Classifier` as ``cfg`` (with a ``task`` section) says and save it to ``run_dir/model``.

    Args:
        cfg: the validated run config; ``cfg.task.classes`` is fitted here.
        run_dir: output folder: ``model/``, ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``,
            ``metrics.json`` (test scores, with ``evaluate``), ``skipped.jsonl`` (if rows were skipped).
        resume: continue from ``run_dir/checkpoints/checkpoint.pt``.
        evaluate: score the test split (if there is one) at the end.
        callbacks: extra callbacks after the built-in ones.
        splits: data already prepared by :func:`~omnibind.data.loading.build_splits` for a config with
            the same data and modalities, whose fitted statistics ``cfg.modalities[*].stats`` already
            holds; preparing once saves much time when many models train on the same data (seeds,
            heads). Default: prepared here from ``cfg``.

    Returns:
        :class:`ClassifyResult` with the trained model (the best one when early stopping is on).

    Raises:
        DataError: an item without a label, or a val/test class never seen in training.
    """
    task = cfg.task
    if task is None:
        raise OmnibindError("train_classifier needs a config with a 'task' section (task: {type: classify})")
    run_dir = Path(run_dir)
    ckpt_path = check_run_dir(run_dir, resume)
    policies = create_policies(task)  # a bad balance option stops the run before anything is read
    tc = cfg.train
    unsupported = [
        f"train.{key}: {value}"
        for key, value, default in (
            ("device", tc.device, ("auto", "cpu")),
            ("precision", tc.precision, ("fp32",)),
            ("micro_batch_size", tc.micro_batch_size, (0,)),
            ("workers", tc.workers, (0,)),
        )
        if value not in default
    ]
    if unsupported:
        raise OmnibindError(
            f"classify runs train on the CPU in fp32, in memory, for now; {', '.join(unsupported)} is for "
            "embedding runs (a config without a 'task' section)"
        )
    if tc.threads:
        torch.set_num_threads(tc.threads)

    # Data and labels first: a bad record or an unseen class stops the run before anything is written.
    if task.init:
        adopt_init(cfg, task.init)
    if splits is None:
        splits = build_splits(cfg, build_kinds(cfg), fit=not task.init, progress=tc.progress)
    else:
        for name, ds in splits.datasets.items():
            if ds.modalities != tuple(cfg.modalities):
                raise OmnibindError(
                    f"train_classifier: the prepared '{name}' split has {', '.join(ds.modalities)}; "
                    f"the config declares {', '.join(cfg.modalities)}"
                )
    if "train" not in splits.datasets:
        raise OmnibindError(f"{cfg.data.source}: no training items (check the 'split' column)")
    train_set = splits.datasets["train"]
    val_set, test_set = splits.datasets.get("val"), splits.datasets.get("test")
    fit_tasks(task, train_set)  # task.classes: a list, or {label: classes} with several tasks
    tasks = label_tasks(task)
    targets = {split: encode_targets(tasks, ds, split) for split, ds in splits.datasets.items()}
    run_dir.mkdir(parents=True, exist_ok=True)
    save_skipped(splits, run_dir)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    torch.manual_seed(tc.seed)
    model = Classifier(cfg)
    if task.init and not resume:
        model.init_encoders(task.init)
    criterion = task_criterion(tasks)
    groups = modality_groups(model.encoder, model.modalities)
    # Policies with running state (AGM's averages) are checkpointed with the loop, so a resume is exact.
    loop = LoopState(
        tc, {"model": model}, len(train_set), states={f"balance.{i}": p for i, p in enumerate(policies)}
    )
    plan, stopper, masker = loop.plan, loop.stopper, loop.generator  # masker: modality dropout draws
    if resume:
        loop.restore(ckpt_path)
    step = loop.step

    events: list[Callback] = [
        ProgressBar(tc.progress),
        MetricsLog(run_dir / "metrics.jsonl"),
        *(callbacks or []),
    ]
    for cb in events:
        cb.on_start(plan.total, step)

    ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    stopped_early = False
    started, start_step = time.perf_counter(), step
    while step < plan.total and not stopped_early:
        epoch, offset = divmod(step, plan.steps_per_epoch)
        order = epoch_order(tc.seed, epoch, len(train_set))
        for i in range(offset, plan.steps_per_epoch):
            t0 = time.perf_counter()
            idx = order[i * plan.batch_size : (i + 1) * plan.batch_size]
            batch, y = train_set.batch(idx), targets["train"][idx]
            model.train()
            embeddings = model.embed(batch)  # {modality: [B, D]}
            present = batch.present
            for policy in policies:
                present = policy.mask(present, masker)
            out = model.head(embeddings, present)
            loss = model.head.loss(out, y, criterion)
            ctx = StepContext(step, embeddings, present, y, model.head, criterion, groups, plan.total)
            loop.optimizer.zero_grad(set_to_none=True)
            _backward(policies, loss, ctx)
            for policy in policies:
                policy.after_backward(ctx)
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(loop.parameters(), tc.grad_clip)
            loop.optimizer.step()
            loop.scheduler.step()
            step = loop.step = step + 1
            seconds = time.perf_counter() - t0
            logs = {
                "epoch": epoch,
                "train/loss": float(loss.detach()),
                "train/accuracy": _accuracy(tasks, out.logits.detach(), y),
                "lr": loop.scheduler.get_last_lr()[0],
                "items_per_s": len(batch) / max(seconds, 1e-9),
                **{k: v for policy in policies for k, v in policy.metrics().items()},
            }
            for cb in events:
                cb.on_step(step, logs)
            if val_set is not None and (step % plan.eval_every == 0 or step == plan.total):
                scores = evaluate_classifier(model, val_set, cfg.eval.batch_size, by_subset=False)
                metrics = _val_metrics(scores)
                for cb in events:
                    cb.on_validate(step, metrics)
                if stopper is not None:
                    if stopper.update(metrics):
                        model.save(run_dir / "model")
                    stopped_early = stopper.should_stop
            if step % plan.checkpoint_every == 0 or step == plan.total or stopped_early:
                loop.save(ckpt_path)
            if step >= plan.total or stopped_early:
                break

    for cb in events:
        cb.on_end()
    train_seconds = time.perf_counter() - started
    if stopper is None or not (run_dir / "model").exists():
        model.save(run_dir / "model")
    else:
        model = Classifier.load(run_dir / "model")
    test = None
    if evaluate and test_set is not None:
        test = evaluate_classifier(model, test_set, cfg.eval.batch_size)
        write_json_atomic(run_dir / "metrics.json", {"task": "classify", "head": task.head, "test": test})
    return ClassifyResult(
        run_dir=run_dir,
        model=model,
        steps=step,
        stopped_early=stopped_early,
        test=test,
        history=read_history(run_dir / "metrics.jsonl"),
        timing={"train_seconds": train_seconds, "steps_timed": float(step - start_step)},
    )
