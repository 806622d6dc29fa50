"""Training over several processes (``torchrun``): one global batch, gathered embeddings, exact gradients.

``torchrun --nproc-per-node N -m omnibind train CONFIG --out RUN`` starts N copies of the trainer; each
finds its rank in the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and joins one process group
(``gloo`` on the CPU, ``nccl`` on CUDA). The contract that makes N processes train the same model as one:

- the global batch of step t is the same set of items for every N (the epoch order depends only on
  ``(seed, epoch)``); rank r encodes the contiguous slice ``r * B/N : (r + 1) * B/N`` of it;
- every rank's embeddings ``{m: [B/N, D]}`` (absent rows are zeros, so every rank holds the same number
  of rows and nothing needs padding) and presence masks are gathered in rank order, the embeddings with
  gradients, in one collective: the objective sees exactly the ``[B, D]`` tensors of the 1-process run;
- without ``local_loss`` every rank computes the whole loss; the gather's backward sums the gradients of
  a rank's rows over the ranks (N times the true one) and the parameter gradients are averaged over the
  ranks, which gives the true gradient (open_clip #616 is the trap of getting this factor wrong);
- with ``objective.local_loss`` a rank computes only its own items' rows against every gathered candidate,
  normalised by the global counts, so the rank losses sum to the global loss; the gradients are summed
  over the ranks;
- rank 0 alone writes the config, checkpoints, metrics and the model, and validates; its early-stopping
  decision is broadcast;
- hard negatives: each rank encodes the step's negatives that its own items mention first (the step's
  negatives are the same set for every N, ``omnibind.data.negatives``), padded with absent rows to the
  width of the widest rank; they travel in the same gather as the items, and the mask of which rows may
  score which negative is the same global one on every rank. With ``local_loss`` a rank scores its own
  rows against every gathered candidate, negatives included.

No encoder uses batch statistics, so a slice is encoded as it would be inside the whole batch.
"""

from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from omnibind.data.batch import NegativeRows
from omnibind.errors import ConfigError, OmnibindError
from omnibind.training.precision import resolve_device
from omnibind.types import Embeddings, HardNegatives


@dataclass(frozen=True)
class Dist:
    """Where this process stands in a multi-process run (world size 1: a plain run).

    Attributes:
        rank: this process's rank.
        world_size: the number of processes.
        local_rank: the rank on this node (which GPU it drives).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and validates."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r} is not an integer") from None


def world_from_env() -> Dist:
    """The :class:`Dist` that ``torchrun`` describes in the environment (rank 0 of 1 without it)."""
    return Dist(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))


def setup(device_spec: str, timeout_s: float = 600.0) -> tuple[Dist, torch.device]:
    """Join the process group ``torchrun`` set up (if any) and pick this rank's device.

    Under torchrun, ``train.device`` ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK`` (one GPU per process)
    and the backend is ``nccl``; on the CPU it is ``gloo``. A collective that waits longer than
    ``timeout_s`` (a rank that hangs) fails instead of waiting for ever; a rank that dies is reported by
    torchrun, which stops the others.

    Raises:
        ConfigError: ``cuda:N`` under torchrun (every rank would share that GPU), or an absent device.
    """
    world = world_from_env()
    if not world.enabled:
        return world, resolve_device(device_spec)
    spec = device_spec.strip().lower()
    if spec.startswith("cuda:"):
        raise ConfigError(
            f"train.device {device_spec!r} under torchrun: every rank would use that one GPU; set "
            "train.device to cuda (or auto), and each rank takes cuda:LOCAL_RANK"
        )
    device = resolve_device(device_spec)
    if device.type == "cuda":
        if world.local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {world.local_rank} but this node has {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU (--nproc-per-node)"
            )
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():  # once per process: later runs in the same process reuse the group
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        atexit.register(shutdown, world)
    return world, device


def check_divisible(batch_size: int, world: Dist, num_items: int) -> None:
    """Refuse a global batch the world size does not divide (before anything is written)."""
    if world.enabled and batch_size % world.world_size:
        small = " (the training split's size, below train.batch_size)" if batch_size >= num_items else ""
        raise OmnibindError(
            f"the global batch of {batch_size} items{small} is not divisible by the {world.world_size} "
            f"processes; choose train.batch_size a multiple of {world.world_size} (nothing was written)"
        )


def gather_batch(
    embeddings: Embeddings, present: Tensor, world: Dist
) -> tuple[Embeddings, Tensor, Tensor | None]:
    """The global batch from every rank's slice: embeddings with gradients, masks, and this rank's rows.

    Args:
        embeddings: this rank's ``{m: [b, D]}`` (absent rows zero).
        present: this rank's ``bool[b, M]``.
        world: the process group's shape.

    Returns:
        ``({m: [N*b, D]}, bool[N*b, M], own)`` in rank order, where ``own`` is ``bool[N*b]``, True on this
        rank's rows (``None`` with one process). One autograd collective carries every modality, so the
        backward passes of all ranks meet in the same order.
    """
    if not world.enabled:
        return embeddings, present, None
    names = list(embeddings)
    stacked = torch.stack([embeddings[m] for m in names], dim=1)  # [b, M, D]
    full = _GatherWithGrad.apply(stacked)  # [N*b, M, D]
    masks = [torch.empty_like(present, dtype=torch.uint8) for _ in range(world.world_size)]
    dist.all_gather(masks, present.to(torch.uint8))
    mask = torch.cat(masks).bool()
    b = present.shape[0]
    own = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)
    own[world.rank * b : (world.rank + 1) * b] = True
    return {m: full[:, k] for k, m in enumerate(names)}, mask, own


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` along dim 0 whose backward hands each rank the sum over ranks of its rows' gradient.

    (``torch.distributed.nn.functional.all_gather`` does the same and is deprecated.) The backward is a
    reduce-scatter on NCCL and an all-reduce of the whole gradient, then this rank's slice, on gloo,
    which has no reduce-scatter.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rows = x.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous()
        rank, rows = dist.get_rank(), ctx.rows
        if dist.get_backend() == dist.Backend.NCCL:
            out = torch.empty((rows, *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
            dist.reduce_scatter_tensor(out, grad)
            return out
        total = grad.clone()
        dist.all_reduce(total)
        return total[rank * rows : (rank + 1) * rows].clone()


class _SumAcrossRanks(torch.autograd.Function):
    """``all_reduce`` (sum) whose backward is the sum of the ranks' gradients (synchronised batch norm)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        y = x.detach().clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        g = grad.detach().clone().contiguous()
        dist.all_reduce(g)
        return g


def all_reduce_sum(x: Tensor) -> Tensor:
    """The sum of ``x`` over the ranks, differentiable (each rank's gradient is the ranks' total)."""
    return _SumAcrossRanks.apply(x)


def reduce_gradients(parameters: list[torch.nn.Parameter], world: Dist, average: bool) -> None:
    """Sum (``local_loss``) or average (every rank computed the whole loss) the gradients over the ranks.

    The gradients are flattened into one buffer per dtype and device, so this is one collective per
    step; a parameter without a gradient contributes zeros (and gets them back as zeros).
    """
    if not world.enabled:
        return
    groups: dict[tuple[torch.dtype, torch.device], list[torch.nn.Parameter]] = {}
    for p in parameters:
        groups.setdefault((p.dtype, p.device), []).append(p)
    for params in groups.values():
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        if average:
            flat /= world.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n


def sum_scalar(value: Tensor, world: Dist) -> float:
    """The sum over the ranks of a detached scalar (the logged loss of a ``local_loss`` run)."""
    if not world.enabled:
        return float(value)
    t = value.detach().to(torch.float64).reshape(1).clone()
    dist.all_reduce(t)
    return float(t)


def gather_objects(items: list[Any], world: Dist) -> list[Any]:
    """The concatenation, in rank order, of every rank's ``items`` (picklable), on every rank."""
    if not world.enabled:
        return list(items)
    parts: list[Any] = [None] * world.world_size
    dist.all_gather_object(parts, list(items))
    return [x for part in parts for x in part]


def broadcast_flag(flag: bool, world: Dist, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (early stopping decided by the rank that validates)."""
    if not world.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def broadcast_tensor(value: Tensor, world: Dist, device: torch.device) -> Tensor:
    """Rank 0's ``value`` (same shape and dtype on every rank) on every rank, on the CPU."""
    if not world.enabled:
        return value
    t = value.to(device).contiguous()
    dist.broadcast(t, src=0)
    return t.cpu()


def barrier(world: Dist) -> None:
    """Wait for every rank (after rank 0 has written a file the others read)."""
    if world.enabled:
        dist.barrier()


def shutdown(world: Dist) -> None:
    """Leave the process group (the end of a multi-process run)."""
    if world.enabled and dist.is_initialized():
        dist.destroy_process_group()


def objective_call(
    objective: torch.nn.Module,
    embeddings: Embeddings,
    present: Tensor,
    logit_scale: Tensor,
    generator: torch.Generator | None,
    world: Dist,
    local_loss: bool,
    groups: Tensor | None = None,
    negatives: NegativeRows | None = None,
) -> Any:
    """Gather this rank's slice into the global batch and run the objective on it.

    With ``local_loss`` (and several processes) the objective is called with ``rows=own``: only this
    rank's rows as queries, every gathered row as a candidate, and the global normalisation. ``groups``
    (``long[b]``, the item of each row: several values of one item, one process) goes to the objective.
    ``negatives`` says that the last rows are hard negatives: they go to the objective as
    ``hard_negatives`` (:func:`gather_with_negatives`).
    """
    if groups is not None:
        if world.enabled:
            raise ValueError("groups (several values per item in a batch) need one process")
        return objective(embeddings, present, logit_scale, generator=generator, groups=groups)
    extra: dict[str, Any] = {}
    if negatives is None:
        embeddings, present, own = gather_batch(embeddings, present, world)
    else:
        embeddings, present, own, extra["hard_negatives"] = gather_with_negatives(
            embeddings, present, negatives, world
        )
    if local_loss and own is not None:
        return objective(embeddings, present, logit_scale, generator=generator, rows=own, **extra)
    return objective(embeddings, present, logit_scale, generator=generator, **extra)


def gather_with_negatives(
    embeddings: Embeddings, present: Tensor, negatives: NegativeRows, world: Dist
) -> tuple[Embeddings, Tensor, Tensor | None, HardNegatives]:
    """Split this rank's rows into items and hard negatives and gather both from every rank.

    Args:
        embeddings: ``{m: [b + K_r, D]}``: this rank's items, then its ``K_r = negatives.count``
            negatives.
        present: ``bool[b + K_r, M]``.
        negatives: the step's :class:`~omnibind.data.batch.NegativeRows`.
        world: the process group's shape.

    Returns:
        ``(items {m: [N*b, D]}, bool[N*b, M], own, HardNegatives)``: the global batch as
        :func:`gather_batch` makes it, and the negatives of every rank (rank after rank, each padded with
        absent rows to ``negatives.width``) with the step's ``allowed`` mask.
    """
    b = present.shape[0] - negatives.count
    pad = negatives.width - negatives.count
    if pad:  # absent rows: masked in the loss, so every rank gathers the same number of rows
        embeddings = {m: torch.cat([x, x.new_zeros(pad, x.shape[1])]) for m, x in embeddings.items()}
        present = torch.cat([present, present.new_zeros(pad, present.shape[1])])
    full, mask, _ = gather_batch(embeddings, present, world)
    per = b + negatives.width  # rows per rank in the gathered tensors
    ranks = torch.arange(world.world_size, device=mask.device)[:, None] * per
    item_rows = (ranks + torch.arange(b, device=mask.device)).flatten()
    negative_rows = (ranks + b + torch.arange(negatives.width, device=mask.device)).flatten()
    own = None
    if world.enabled:
        own = torch.zeros(world.world_size * b, dtype=torch.bool, device=mask.device)
        own[world.rank * b : (world.rank + 1) * b] = True
    hard = HardNegatives(
        {m: x[negative_rows] for m, x in full.items()},
        mask[negative_rows],
        negatives.allowed.to(mask.device),
    )
    return {m: x[item_rows] for m, x in full.items()}, mask[item_rows], own, hard
