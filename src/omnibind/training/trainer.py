"""The training loop, readable top to bottom.

``train(cfg, run_dir)`` loads and checks the data (before anything is written), builds the model and the
objective, and runs AdamW with warm-up + cosine decay and gradient clipping. Each step is::

    batch = train_set.batch(order[...])                      # index gather: data is prepared once
    with autocast: embeddings = model.encode(batch)          # {modality: [B, D]}, present rows only
    out = objective(embeddings, batch.present, model.logit_scale, generator)
    out.loss.backward(); clip; optimizer.step(); scheduler.step(); model.clamp_logit_scale()

Validation, checkpoints, the metrics log, early stopping and the progress bar happen between steps. The
data order of epoch ``e`` depends only on ``(seed, e)``, and the checkpoint holds every RNG state, so a
run killed at any moment and resumed with ``resume=True`` ends with the same weights as an uninterrupted
run. ``train.device`` and ``train.precision`` (see ``precision.py``) say where and in which format the
step runs; the data stays on the CPU until the encoders take it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from omnibind.config import RunConfig
from omnibind.data.dataset import Dataset
from omnibind.data.loading import build_kinds, build_splits, save_skipped
from omnibind.errors import OmnibindError
from omnibind.evaluation.evaluate import validation_metrics
from omnibind.io import write_text_atomic
from omnibind.model import OmniModel
from omnibind.objectives import create_objective
from omnibind.training.callbacks import Callback, MetricsLog, ProgressBar, read_history
from omnibind.training.checkpoint import CHECKPOINT_NAME
from omnibind.training.gradcache import cached_step
from omnibind.training.init import adopt_init, copy_weights
from omnibind.training.loop_state import LoopState
from omnibind.training.precision import Precision, resolve_device


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    model: OmniModel
    steps: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)


def epoch_order(seed: int, epoch: int, size: int) -> torch.Tensor:
    """The item order of one epoch: a permutation that depends only on ``(seed, epoch)``."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(size, generator=gen)


def check_run_dir(run_dir: Path, resume: bool) -> Path:
    ckpt = run_dir / "checkpoints" / CHECKPOINT_NAME
    if resume and not ckpt.exists():
        raise OmnibindError(f"--resume: no checkpoint at {ckpt}; start the run without --resume")
    if not resume and ((run_dir / "model").exists() or ckpt.exists()):
        raise OmnibindError(
            f"{run_dir} already holds a run; pass --resume to continue it or choose another --out "
            "(nothing was overwritten)"
        )
    return ckpt


def train(
    cfg: RunConfig,
    run_dir: str | Path,
    resume: bool = False,
    callbacks: list[Callback] | None = None,
) -> TrainResult:
    """Train an :class:`OmniModel` as ``cfg`` says and save it to ``run_dir/model``.

    Args:
        cfg: the validated run config.
        run_dir: output folder: ``model/``, ``config.yaml``, ``metrics.jsonl``, ``checkpoints/``,
            ``skipped.jsonl`` (if rows were skipped).
        resume: continue from ``run_dir/checkpoints/checkpoint.pt``.
        callbacks: extra callbacks after the built-in ones.

    Returns:
        :class:`TrainResult` with the trained model (the best one when early stopping is on).
    """
    run_dir = Path(run_dir)
    ckpt_path = check_run_dir(run_dir, resume)
    tc = cfg.train
    device = resolve_device(tc.device)
    precision = Precision(tc.precision, device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)

    # Data first: a bad record stops the run before anything is written.
    init = cfg.model.init
    copy_projections = False
    if init:
        copy_projections = adopt_init(cfg, init, "model.init", require_same_projection=False)
    kinds = build_kinds(cfg)
    splits = build_splits(cfg, kinds, wanted=("train", "val"), fit=not init, progress=tc.progress)
    if "train" not in splits.datasets:
        raise OmnibindError(f"{cfg.data.source}: no training items (check the 'split' column)")
    train_set: Dataset = splits.datasets["train"]
    val_set: Dataset | None = splits.datasets.get("val")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_skipped(splits, run_dir)
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    torch.manual_seed(tc.seed)
    model = OmniModel(cfg)
    if init and not resume:
        copy_weights(model, init, projections=copy_projections)
    objective = create_objective(cfg.objective.name, **cfg.objective.options)
    # weights are made on the CPU (the same initial weights on every device), then moved
    model.to(device=device, dtype=precision.dtype)
    objective.to(device=device, dtype=precision.dtype)
    scaler = precision.grad_scaler()
    loop = LoopState(
        tc,
        {"model": model, "objective": objective},
        len(train_set),
        states={"grad_scaler": scaler} if scaler is not None else None,
    )
    plan, stopper = loop.plan, loop.stopper
    micro = tc.micro_batch_size
    if micro and plan.batch_size % micro:
        raise OmnibindError(
            f"train.micro_batch_size {micro} does not divide the batch of {plan.batch_size} items (the "
            f"training split has only {len(train_set)} items); choose a divisor of {plan.batch_size}"
        )
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
    data_time = step_time = 0.0
    start_step = step
    while step < plan.total and not stopped_early:
        epoch, offset = divmod(step, plan.steps_per_epoch)
        order = epoch_order(tc.seed, epoch, len(train_set))
        for i in range(offset, plan.steps_per_epoch):
            t0 = time.perf_counter()
            indices = order[i * plan.batch_size : (i + 1) * plan.batch_size]
            model.train()
            loop.optimizer.zero_grad(set_to_none=True)
            if micro:  # GradCache: batches are made per micro-batch inside
                t1 = time.perf_counter()
                out = cached_step(
                    model, objective, train_set.batch, indices, micro, precision, loop.generator, scaler
                )
            else:
                batch = train_set.batch(indices)
                t1 = time.perf_counter()
                with precision.autocast():
                    embeddings = model.encode(batch)  # {modality: [B, D]}
                # the objective always runs in fp32 (fp64 for fp64 runs), never in half precision
                embeddings = {k: v.to(precision.dtype) for k, v in embeddings.items()}
                present = batch.present.to(device)
                out = objective(embeddings, present, model.logit_scale, generator=loop.generator)
                (scaler.scale(out.loss) if scaler is not None else out.loss).backward()
            if scaler is not None:
                scaler.unscale_(loop.optimizer)  # clip the true gradients
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(loop.parameters(), tc.grad_clip)
            if scaler is not None:
                scaler.step(loop.optimizer)
                scaler.update()
            else:
                loop.optimizer.step()
            loop.scheduler.step()
            model.clamp_logit_scale()
            step = loop.step = step + 1
            t2 = time.perf_counter()
            data_time += t1 - t0
            step_time += t2 - t0
            logs = {
                "epoch": epoch,
                "train/loss": float(out.loss.detach()),
                "lr": loop.scheduler.get_last_lr()[0],
                "logit_scale": float(model.logit_scale.detach()),
                "items_per_s": len(indices) / max(t2 - t0, 1e-9),
                "data_wait": (t1 - t0) / max(t2 - t0, 1e-9),
            }
            for cb in events:
                cb.on_step(step, logs)
            if val_set is not None and (step % plan.eval_every == 0 or step == plan.total):
                metrics = validation_metrics(model, val_set, cfg.eval)
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
    if stopper is None or not (run_dir / "model").exists():
        model.save(run_dir / "model")
    else:
        model = OmniModel.load(run_dir / "model", device=device)
    timing = {
        "steps_timed": float(step - start_step),
        "data_wait_fraction": data_time / step_time if step_time else 0.0,
        "items_per_s": ((step - start_step) * plan.batch_size) / step_time if step_time else 0.0,
    }
    return TrainResult(
        run_dir=run_dir,
        model=model,
        steps=step,
        stopped_early=stopped_early,
        history=read_history(run_dir / "metrics.jsonl"),
        timing=timing,
    )
