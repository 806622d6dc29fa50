"""Large contrastive batches in bounded memory: ``train.micro_batch_size`` (GradCache).

A contrastive loss couples every item of the batch, so it cannot be split like a sum of per-item losses.
GradCache (Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup", 2021)
splits the *encoders* instead, in three passes over a batch of ``B`` items and micro-batches of ``K``:

1. encode each micro-batch without a graph, keeping only its embeddings ``[K, D]`` (and the RNG state it
   started from);
2. compute the loss on the whole batch's embeddings (leaf tensors) and back-propagate it: the gradients
   of the objective's own parameters (logit scale, SigLIP's bias) are final, and each embedding gets
   ``dL/dz``;
3. encode each micro-batch again, with a graph and the RNG state of pass 1 (so dropout draws the same
   masks), and back-propagate ``dL/dz`` of its rows into the encoders.

Encoders see rows independently (no batch statistics), so the gradients equal those of the plain batch up
to rounding; peak activation memory is that of ``K`` items, plus ``B x D`` embeddings. A ``bn``
projection normalises with batch statistics, which differ per micro-batch: it is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from omnibind.data.batch import Batch
from omnibind.model import OmniModel
from omnibind.training.precision import Precision
from omnibind.types import Embeddings, LossOutput


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, Tensor | None], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def cached_step(
    model: OmniModel,
    loss_fn: Callable[[Embeddings, Tensor], LossOutput],
    batch_of: Callable[[Tensor], Batch],
    indices: Tensor,
    micro_batch_size: int,
    precision: Precision,
    scaler: Any = None,
) -> LossOutput:
    """Run the forward and backward passes of one step with micro-batches; gradients end in ``.grad``.

    Args:
        model: the model, in training mode.
        loss_fn: the objective on ``(embeddings {m: [B, D]}, present bool[B, M])``, with its logit scale
            and generator bound (under torchrun it gathers the ranks' slices first).
        batch_of: makes the :class:`Batch` of some item indices (``Dataset.batch``).
        indices: the step's item indices ``[B]`` (this rank's slice under torchrun).
        micro_batch_size: items per micro-batch ``K`` (the last one may be smaller).
        precision: the run's number format (autocast and the loss dtype).
        scaler: the ``GradScaler`` of an fp16 run, or ``None``.

    Returns:
        the objective's output on the whole batch (its ``loss`` detached from the encoders' graph).
    """
    device = precision.device
    chunks = list(indices.split(micro_batch_size))
    states = []
    parts: dict[str, list[Tensor]] = {m: [] for m in model.modalities}
    presents = []
    with torch.no_grad():
        for chunk in chunks:  # pass 1: embeddings only
            states.append(_rng_state(device))
            batch = batch_of(chunk)
            presents.append(batch.present)
            with precision.autocast():
                embeddings = model.encode(batch)
            for name, z in embeddings.items():
                parts[name].append(z.to(precision.dtype))
    after = _rng_state(device)
    leaves = {m: torch.cat(v).requires_grad_(True) for m, v in parts.items()}  # {m: [B, D]}
    present = torch.cat(presents).to(device)
    out = loss_fn(leaves, present)  # pass 2
    (scaler.scale(out.loss) if scaler is not None else out.loss).backward()
    start = 0
    for chunk, state in zip(chunks, states, strict=True):  # pass 3: replay with a graph
        _set_rng_state(state, device)
        rows = slice(start, start + len(chunk))
        start += len(chunk)
        with precision.autocast():
            embeddings = model.encode(batch_of(chunk))
        names = [m for m in embeddings if leaves[m].grad is not None]
        torch.autograd.backward(
            [embeddings[m].to(precision.dtype) for m in names],
            [leaves[m].grad[rows] for m in names],  # type: ignore[index]
        )
    _set_rng_state(after, device)  # the RNG moves on as after one pass over the batch
    return dataclasses.replace(out, loss=out.loss.detach())
