"""Pure tensor helpers shared by the objectives: input checks, masking, logits, cross-entropy.

Every objective starts with :func:`prepare`, which checks the embeddings against the presence mask and
replaces the rows of absent items by zeros with ``torch.where``. From then on an absent row is a finite
constant whose gradient is exactly zero, whatever the caller stored there (zeros, garbage, even NaN),
so the objectives can mask logits without the ``0 * NaN`` trap of multiplicative masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from omnibind.types import Embeddings, HardNegatives


def prepare(
    embeddings: Embeddings, present: Tensor | None, *, min_modalities: int = 2
) -> tuple[list[str], list[Tensor], Tensor]:
    """Check the inputs of an objective and zero the rows of absent items.

    Args:
        embeddings: modality name -> ``[N, D]`` rows, all with the same N, D, dtype and device.
        present: ``bool[N, M]`` (column m = m-th key of ``embeddings``) or None for "all present".
        min_modalities: the objective needs at least this many modalities.

    Returns:
        ``(names, tensors, present)``: the modality names in dict order, the ``[N, D]`` tensors with
        absent rows replaced by zeros (gradient to those rows is zero), and the ``bool[N, M]`` mask.
    """
    names = list(embeddings)
    if len(names) < min_modalities:
        raise ValueError(f"need at least {min_modalities} modalities, got {len(names)}: {names}")
    first = embeddings[names[0]]
    for name in names:
        x = embeddings[name]
        if x.dim() != 2 or x.shape != first.shape:
            raise ValueError(
                f"embeddings['{name}'] has shape {tuple(x.shape)}; every modality needs the same "
                f"[N, D] shape as embeddings['{names[0]}'] {tuple(first.shape)}"
            )
    n = first.shape[0]
    if present is None:
        mask = torch.ones(n, len(names), dtype=torch.bool, device=first.device)
    else:
        if tuple(present.shape) != (n, len(names)):
            raise ValueError(
                f"present has shape {tuple(present.shape)}; expected [N, M] = [{n}, {len(names)}]"
            )
        mask = present.to(device=first.device, dtype=torch.bool)
    if present is None or bool(mask.all()):
        return names, [embeddings[name] for name in names], mask
    tensors = [zero_absent(embeddings[name], mask[:, m]) for m, name in enumerate(names)]
    return names, tensors, mask


def zero_absent(x: Tensor, rows: Tensor) -> Tensor:
    """``x`` with the rows where ``rows`` is False replaced by zeros; their gradient is zero."""
    return torch.where(rows[:, None], x, torch.zeros((), dtype=x.dtype, device=x.device))


def as_scale(value: Tensor | float, like: Tensor) -> Tensor:
    """The multiplier ``s`` (or a bias) as a 0-dim tensor on ``like``'s device; keeps its graph."""
    if isinstance(value, Tensor):
        return value.to(device=like.device).reshape(())
    return torch.tensor(float(value), dtype=like.dtype, device=like.device)


def mip(vectors: Sequence[Tensor]) -> Tensor:
    """Multilinear inner product row by row: ``[K, D]`` tensors -> ``[K]`` = sum_t prod_m v_m[:, t]."""
    return mip_rows(vectors).sum(dim=-1)


def diagonal_cross_entropy(logits: Tensor) -> Tensor:
    """Mean over rows of ``logsumexp(logits[a]) - logits[a, a]`` for a square ``[K, K]`` matrix."""
    return (torch.logsumexp(logits, dim=1) - logits.diagonal()).mean()


def connected_zero(tensors: Sequence[Tensor]) -> Tensor:
    """A scalar 0 attached to the inputs' graph, so ``loss.backward()`` works on an empty batch.

    The inputs must already be finite (use it on the output of :func:`prepare`).
    """
    return sum((t.sum() * 0.0 for t in tensors), start=tensors[0].new_zeros(()))


def pair_indices(names: Sequence[str], pairs: str) -> list[tuple[int, int]]:
    """The unordered modality pairs ``(i, j)`` of a pairwise loss: ``"all"`` pairs ``i < j``, or a star
    ``(anchor, j)`` around the modality named ``pairs``."""
    if pairs == "all":
        return [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    if pairs in names:
        anchor = list(names).index(pairs)
        return [(anchor, j) for j in range(len(names)) if j != anchor]
    raise ValueError(f"pairs must be 'all' or a modality name ({', '.join(names)}); got {pairs!r}")


def pair_rows(present: Tensor, i: int, j: int) -> Tensor:
    """Indices ``[R]`` of the rows where modalities ``i`` and ``j`` are both present."""
    return torch.nonzero(present[:, i] & present[:, j]).flatten()


class Negatives(NamedTuple):
    """:class:`~omnibind.types.HardNegatives` checked by :func:`prepare_negatives`, tensors in the
    order of the batch's modalities, absent rows zeroed."""

    tensors: list[Tensor]  # [K, D] per modality
    present: Tensor  # bool[K, M]
    allowed: Tensor  # bool[N, K]


def prepare_negatives(negatives: HardNegatives | None, names: list[str], n: int) -> Negatives | None:
    """Check the hard negatives of an objective call against the batch (``names``, ``n`` rows).

    Raises:
        ValueError: other modalities than the batch's, or shapes that do not fit.
    """
    if negatives is None:
        return None
    if list(negatives.embeddings) != names:
        raise ValueError(
            f"hard negatives have the modalities {list(negatives.embeddings)}; expected the batch's {names}"
        )
    k = negatives.present.shape[0]
    if tuple(negatives.present.shape) != (k, len(names)) or tuple(negatives.allowed.shape) != (n, k):
        raise ValueError(
            f"hard negatives: present {tuple(negatives.present.shape)} and allowed "
            f"{tuple(negatives.allowed.shape)} must be [K, M] = [{k}, {len(names)}] and [N, K] = [{n}, {k}]"
        )
    present = negatives.present.bool()
    tensors = [zero_absent(negatives.embeddings[name], present[:, m]) for m, name in enumerate(names)]
    return Negatives(tensors, present, negatives.allowed.bool())


def negative_logits(
    query: Tensor, query_rows: Tensor, negatives: Negatives | None, target: Sequence[int]
) -> Tensor | None:
    """The logit block of the hard negatives: ``[Q, K']`` = ``query @ T.T`` with ``T`` the product over
    the ``target`` modalities of the negatives that have all of them (one modality: its embeddings; more:
    the Symile tuple of each negative item), ``-inf`` where ``allowed`` is False for the query's row.

    ``query`` is ``[Q, D]``, already multiplied by the logit scale; ``query_rows`` (``long[Q]``) are its
    rows in the batch. None when no negative has the target modalities.
    """
    if negatives is None:
        return None
    has = negatives.present[:, list(target)].all(dim=1)  # [K]
    cols = torch.nonzero(has).flatten()
    if cols.numel() == 0:
        return None
    candidates = mip_rows([negatives.tensors[t][cols] for t in target])  # [K', D]
    logits = query @ candidates.T  # [Q, K']
    allowed = negatives.allowed[query_rows][:, cols]  # [Q, K']
    return logits.masked_fill(~allowed, float("-inf"))


def mip_rows(vectors: Sequence[Tensor]) -> Tensor:
    """The element-wise product of ``[K, D]`` tensors (one tensor: itself)."""
    product = vectors[0]
    for v in vectors[1:]:
        product = product * v
    return product
