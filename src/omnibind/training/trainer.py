"""The training loop, readable top to bottom.

``train(cfg, run_dir)`` loads and checks the data (before anything is written), builds the model and the
objective, and runs AdamW with warm-up + cosine decay and gradient clipping. Each step is::

    batch = next(batches)           # the batch of this step: an index gather, or decoded in a worker
    with autocast: embeddings = model.encode(batch)          # {modality: [B, D]}, present rows only
    out = objective(embeddings, batch.present, model.logit_scale, generator)
    out.loss.backward(); clip; optimizer.step(); scheduler.step(); model.clamp_logit_scale()

Validation, checkpoints, the metrics log, early stopping and the progress bar happen between steps. The
data order of epoch ``e`` depends only on ``(seed, e)``, and the checkpoint holds every RNG state, so a
run killed at any moment and resumed with ``resume=True`` ends with the same weights as an uninterrupted
run. ``train.device`` and ``train.precision`` (see ``precision.py``) say where and in which format the
step runs; the data stays on the CPU until the encoders take it. Under ``torchrun`` each process encodes
its slice of the same global batch and the objective sees the gathered batch (``distributed.py``).

Hard negatives (a ``negatives`` column, or ``objective.hard_negatives`` mined by ``mining.py`` at the start
of every ``mine_every``-th epoch) are items appended to a step's batch: encoded with it, handed to the
objective as ``hard_negatives`` (extra candidates only). Without them the step is the one above.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from omnibind.config import RunConfig
from omnibind.data.dataset import Dataset, record_skipped
from omnibind.data.loading import build_kinds, build_splits, save_skipped
from omnibind.data.negatives import NegativeTable, column_table, find_duplicates
from omnibind.data.streaming import (
    DiskCache,
    LazyDataset,
    StepBatches,
    TrainData,
    check_picklable,
    resolve_cache,
    step_loader,
)
from omnibind.errors import DataError, OmnibindError
from omnibind.evaluation.evaluate import validation_metrics
from omnibind.io import write_text_atomic
from omnibind.model import OmniModel
from omnibind.objectives import create_objective
from omnibind.training import distributed
from omnibind.training.callbacks import Callback, MetricsLog, ProgressBar, read_history
from omnibind.training.checkpoint import CHECKPOINT_NAME
from omnibind.training.gradcache import cached_step
from omnibind.training.init import adopt_init, check_binding_pairs, copy_weights, new_modalities
from omnibind.training.loop_state import LoopState
from omnibind.training.mining import Miner, training_pairs
from omnibind.training.precision import Precision


@dataclass
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    model: OmniModel
    steps: int
    stopped_early: bool
    history: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)


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
    world, device = distributed.setup(tc.device, tc.dist_timeout)
    return _train(cfg, run_dir, ckpt_path, resume, callbacks, world, device)


def _check_distributed(cfg: RunConfig, objective: torch.nn.Module, world: distributed.Dist) -> None:
    """What a multi-process run (or ``local_loss``) cannot do, refused before anything is written."""
    if cfg.objective.local_loss and "rows" not in inspect.signature(objective.forward).parameters:
        raise OmnibindError(
            f"objective.local_loss: objective '{cfg.objective.name}' takes no rows= argument, so it cannot "
            "compute a local loss; set objective.local_loss: false"
        )
    multi = [name for name, spec in cfg.modalities.items() if spec.multi]
    if multi and cfg.objective.multi_positive == "all" and (world.enabled or cfg.train.micro_batch_size):
        raise OmnibindError(
            "objective.multi_positive: all (every value of " + ", ".join(multi) + " in the batch) is not "
            "supported under torchrun or with train.micro_batch_size yet; use multi_positive: sample"
        )


def _hard_negatives(
    cfg: RunConfig, objective: torch.nn.Module, train_set: TrainData, precision: Precision, progress: bool
) -> tuple[NegativeTable | None, Miner | None]:
    """The hard negatives of the run: the ``negatives`` column's table, or a table to mine, or neither.

    Raises (before anything is written):
        DataError: a ``negatives`` id that is not a training item.
        OmnibindError: the column and ``objective.hard_negatives`` together, an objective that takes no
            ``hard_negatives``, or ``multi_positive: all``.
    """
    hard = cfg.objective.hard_negatives
    listed = any(r.negatives for r in train_set.records)
    if hard is None and not listed:
        return None, None
    where = "objective.hard_negatives" if hard is not None else "the data's 'negatives' column"
    if hard is not None and listed:
        raise OmnibindError(
            "the data has a 'negatives' column and objective.hard_negatives mines them: choose one (remove "
            "objective.hard_negatives to train on the column's negatives, or drop the column to mine)"
        )
    if "hard_negatives" not in inspect.signature(objective.forward).parameters:
        raise OmnibindError(
            f"{where}: objective '{cfg.objective.name}' takes no hard_negatives= argument; use infonce, "
            "siglip or symile, or train without hard negatives"
        )
    if cfg.objective.multi_positive == "all":
        raise OmnibindError(f"{where} with objective.multi_positive: all is not supported; use sample")
    duplicates = find_duplicates(train_set, cfg.eval.batch_size, progress)
    if hard is None:
        return column_table(train_set.records, duplicates), None
    table = NegativeTable.empty(len(train_set), duplicates)
    pairs = training_pairs(cfg)
    return table, Miner(table, hard.mine_every, hard.k, pairs, cfg.eval.batch_size, precision, progress)


def _mine(miner: Miner, model: OmniModel, data: TrainData, epoch: int, world: distributed.Dist) -> dict:
    """One mining round on every rank; rank 0's table is the one every rank keeps."""
    stats = miner.mine(model, data, epoch)
    device = model.log_logit_scale.device
    miner.table.table = distributed.broadcast_tensor(miner.table.table, world, device)
    return stats


def parameter_line(model: OmniModel) -> str:
    """One line: trainable / total parameters per modality (frozen backbones included in the total)."""
    counts = model.parameter_counts()
    parts = [f"{m} {t:,} / {n:,}" for m, (t, n) in counts.items()]
    return "trainable / total parameters: " + ", ".join(parts)


def _feature_cache(cfg: RunConfig, model: OmniModel, train_set: TrainData) -> DiskCache | None:
    """With ``data.cache: DIR``, the frozen encoders' outputs for the training items, on disk in
    ``DIR/train/features-<digest>``: the digest covers those encoders' weights and config, so another
    model.init or backbone gets its own folder."""
    where = resolve_cache(cfg.data.cache, len(train_set))
    # one row per item: a multi-valued modality's features are not cached
    frozen = [m for m in model.frozen_modalities() if not cfg.modalities[m].multi]
    if not frozen or where in ("memory", "none") or not isinstance(train_set, LazyDataset):
        return None
    digest = hashlib.blake2b(digest_size=16)
    for name in frozen:
        digest.update(json.dumps(cfg.to_dict()["modalities"][name], sort_keys=True, default=str).encode())
        for key, value in sorted(model.encoders[name].state_dict().items()):
            digest.update(key.encode() + value.detach().cpu().double().numpy().tobytes())
    identity = {"features": digest.hexdigest(), "source": cfg.data.source}
    shapes = {name: (int(model.encoders[name].output_dim),) for name in frozen}
    root = Path(where) / "train" / f"features-{digest.hexdigest()[:16]}"
    return DiskCache(root, train_set.ids, shapes, identity, train_set.content)


def _train(
    cfg: RunConfig,
    run_dir: Path,
    ckpt_path: Path,
    resume: bool,
    callbacks: list[Callback] | None,
    world: distributed.Dist,
    device: torch.device,
) -> TrainResult:
    tc = cfg.train
    main = world.is_main
    precision = Precision(tc.precision, device)
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)

    # Data first: a bad record stops the run before anything is written.
    init = cfg.model.init
    copy_projections = False
    bind: list[str] = []  # modalities bound into the trained space of model.init (the rest is frozen)
    if init:
        bind = new_modalities(cfg, init)
        copy_projections = adopt_init(cfg, init, "model.init", require_same_projection=bool(bind), new=bind)
    kinds = build_kinds(cfg)
    progress = tc.progress and main
    wanted = ("train", "val") if main else ("train",)  # rank 0 alone validates
    fit: bool | tuple[str, ...] = tuple(bind) if init else True
    splits = build_splits(cfg, kinds, wanted=wanted, fit=fit, progress=progress, stream=("train",))
    if "train" not in splits.datasets:
        raise OmnibindError(f"{cfg.data.source}: no training items (check the 'split' column)")
    train_set: TrainData = splits.datasets["train"]
    val_set: Dataset | None = splits.datasets.get("val")
    if bind:
        check_binding_pairs(train_set.present, train_set.modalities, bind, init)

    torch.manual_seed(tc.seed)
    model = OmniModel(cfg)
    if init and not resume:
        copy_weights(model, init, projections=copy_projections, new=bind)
    if bind:  # binding: the trained towers and the logit scale stay as they are
        model.freeze_towers([m for m in model.modalities if m not in bind])
    if main and tc.progress:
        print(parameter_line(model), file=sys.stderr)
    objective = create_objective(cfg.objective.name, **cfg.objective.options)
    _check_distributed(cfg, objective, world)
    negatives, miner = _hard_negatives(cfg, objective, train_set, precision, progress)
    if tc.workers:
        check_picklable(kinds)  # the kinds go to the worker processes
    # weights are made on the CPU (the same initial weights on every device), then moved
    model.to(device=device, dtype=precision.dtype)
    model.feature_cache = _feature_cache(cfg, model, train_set)
    objective.to(device=device, dtype=precision.dtype)
    scaler = precision.grad_scaler()
    states: dict[str, Any] = {"grad_scaler": scaler} if scaler is not None else {}
    if miner is not None:  # the mined negatives: a resumed run uses the same ones
        states["hard_negatives"] = miner.table
    loop = LoopState(tc, {"model": model, "objective": objective}, len(train_set), states=states or None)
    plan, stopper = loop.plan, loop.stopper
    micro = tc.micro_batch_size
    if micro and plan.batch_size % micro:
        raise OmnibindError(
            f"train.micro_batch_size {micro} does not divide the batch of {plan.batch_size} items (the "
            f"training split has only {len(train_set)} items); choose a divisor of {plan.batch_size}"
        )
    distributed.check_divisible(plan.batch_size, world, len(train_set))
    if main:  # the data and the config are checked: now the run folder is written
        run_dir.mkdir(parents=True, exist_ok=True)
        save_skipped(splits, run_dir)
        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    if resume:
        loop.restore(ckpt_path)
    step = loop.step
    local_loss = cfg.objective.local_loss and world.enabled

    def loss_fn(
        embeddings: dict[str, torch.Tensor],
        present: torch.Tensor,
        groups: torch.Tensor | None = None,
        negatives: Any = None,
    ) -> Any:
        """The objective on the global batch (gathered from every rank under torchrun)."""
        return distributed.objective_call(
            objective,
            embeddings,
            present,
            model.logit_scale,
            loop.generator,
            world,
            local_loss,
            groups,
            negatives,
        )

    events: list[Callback] = (
        [ProgressBar(tc.progress), MetricsLog(run_dir / "metrics.jsonl"), *(callbacks or [])] if main else []
    )
    for cb in events:
        cb.on_start(plan.total, step)

    if main:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    stopped_early = False
    data_time = step_time = mining_time = 0.0
    start_step = step
    steps = StepBatches(
        train_set,
        tc.seed,
        plan.batch_size,
        plan.steps_per_epoch,
        plan.total,
        world.rank,
        world.world_size,
        views=cfg.objective.multi_positive,
        negatives=negatives,
    )
    loader = step_loader(steps, step, plan.total, tc.workers, pin_memory=device.type == "cuda")
    batches = iter(loader)
    bad_values: list[DataError] = []  # values that failed to decode while training (on_error: skip)
    while step < plan.total and not stopped_early:
        epoch = step // plan.steps_per_epoch
        due = miner.due(step, plan.steps_per_epoch) if miner is not None else None
        if miner is not None and due is not None:  # a new table: workers' copies, prefetched batches stale
            del batches, loader
            stats = _mine(miner, model, train_set, due, world)
            mining_time += stats["mining/seconds"]
            for cb in events:
                cb.on_mining(step + 1, stats)
            loader = step_loader(steps, step, plan.total, tc.workers, pin_memory=device.type == "cuda")
            batches = iter(loader)
        t0 = time.perf_counter()
        batch = next(batches)  # this rank's part of the global batch of this step
        if isinstance(batch, DataError):
            raise batch  # on_error: stop; the last checkpoint is intact
        bad_values.extend(batch.skipped)
        t1 = time.perf_counter()
        model.train()
        loop.optimizer.zero_grad(set_to_none=True)
        if micro:  # GradCache: micro-batches are cut from the batch inside (its negatives too)
            rows = torch.arange(len(batch))
            step_loss = functools.partial(loss_fn, negatives=batch.negatives)
            out = cached_step(model, step_loss, batch.select, rows, micro, precision, scaler)
        else:
            with precision.autocast():
                embeddings = model.encode(batch)  # {modality: [b, D]} (then the hard negatives' rows)
            # the objective always runs in fp32 (fp64 for fp64 runs), never in half precision
            embeddings = {k: v.to(precision.dtype) for k, v in embeddings.items()}
            groups = None if batch.groups is None else batch.groups.to(device)  # multi_positive: all
            out = loss_fn(embeddings, batch.present.to(device), groups, batch.negatives)
            (scaler.scale(out.loss) if scaler is not None else out.loss).backward()
        # the true gradient on every rank: averaged (each computed the whole loss) or summed (local)
        distributed.reduce_gradients(loop.parameters(), world, average=not local_loss)
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
        if step > start_step + 1:  # the first step also starts the workers: not the steady state
            data_time += t1 - t0
            step_time += t2 - t0
        loss = distributed.sum_scalar(out.loss, world) if local_loss else float(out.loss.detach())
        logs = {
            "epoch": epoch,
            "train/loss": loss,
            "lr": loop.scheduler.get_last_lr()[0],
            "logit_scale": float(model.logit_scale.detach()),
            "items_per_s": plan.batch_size / max(t2 - t0, 1e-9),
            "data_wait": (t1 - t0) / max(t2 - t0, 1e-9),
        }
        for cb in events:
            cb.on_step(step, logs)
        validate = step % plan.eval_every == 0 or step == plan.total
        if val_set is not None and validate:
            metrics = validation_metrics(model, val_set, cfg.eval)
            for cb in events:
                cb.on_validate(step, metrics)
            if stopper is not None:
                if stopper.update(metrics):
                    model.save(run_dir / "model")
                stopped_early = stopper.should_stop
        if stopper is not None and world.enabled and validate:
            stopped_early = distributed.broadcast_flag(stopped_early, world, device)
        if step % plan.checkpoint_every == 0 or step == plan.total or stopped_early:
            found = distributed.gather_objects(bad_values, world)  # every rank's, on every rank
            if main:
                record_skipped(run_dir / "skipped.jsonl", found)
                loop.save(ckpt_path)
            bad_values = []
    del batches, loader  # ends the worker processes

    for cb in events:
        cb.on_end()
    best_saved = stopper is not None and (run_dir / "model").exists() if main else False
    if world.enabled:
        best_saved = distributed.broadcast_flag(best_saved, world, device)
    if main and not best_saved:
        model.save(run_dir / "model")
    distributed.barrier(world)  # the model folder is complete before any rank reads it or returns
    if best_saved:
        model = OmniModel.load(run_dir / "model", device=device)
    timing = {
        "steps_timed": float(max(0, step - start_step - 1)),
        "data_wait_fraction": data_time / step_time if step_time else 0.0,
        "items_per_s": (max(0, step - start_step - 1) * plan.batch_size) / step_time if step_time else 0.0,
        "mining_seconds": mining_time,
    }
    return TrainResult(
        run_dir=run_dir,
        model=model,
        steps=step,
        stopped_early=stopped_early,
        history=read_history(run_dir / "metrics.jsonl"),
        timing=timing,
    )
