"""Grouped batches: hard negatives for contrastive training by putting items that share facts together.

In a random batch almost every negative already differs from the positive in some easy fact, so the loss
is nearly solved without the hard ones. ``train.group_by`` names fields (facts, ``label``, manifest
columns); :func:`grouped_order` then orders an epoch so that most batches hold items of one group, whose
negatives agree on those fields and differ only in what the fields do not say. In ``builtin:shapes``,
grouping the Symile run by ``[shape, colour]`` leaves the XOR bits as what tells a batch's tuples apart.

The order of an epoch, for groups of items and a batch size ``B``:

1. the items are shuffled, then stably sorted by group in a random order of the groups, and cut into
   chunks of ``B``: each chunk holds one group, or the tail of one group and the head of the next;
2. a share ``1 - share`` of the full chunks is melted down and its items reshuffled into random chunks
   (a mix of grouped and random batches keeps the easy facts in view);
3. the full chunks are shuffled; the last, partial chunk (if any) goes at the end, where the trainer
   drops it like the partial batch of a random order.

The order is a permutation of ``range(len(keys))`` and depends only on the generator's state.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import Tensor

from omnibind.data.missingness import field_value
from omnibind.data.record import Record
from omnibind.errors import DataError


def group_keys(records: Sequence[Record], fields: Sequence[str]) -> list[tuple[str, ...]]:
    """Each record's group: its values of ``fields``, read as ``task.label`` reads a field.

    Args:
        records: the training items.
        fields: fact names, ``label`` or manifest columns (``train.group_by``).

    Returns:
        one tuple of strings per record, in order.

    Raises:
        DataError: a record has no value for one of the fields (naming the record, the field and the
            fields it does have).
    """
    keys = []
    for record in records:
        values = [field_value(record, f) for f in fields]
        for f, v in zip(fields, values, strict=True):
            if v is None:
                known = sorted({*(record.facts or {}), *record.metadata, "label"})
                raise DataError(
                    f"train.group_by names '{f}', which this item lacks; expected a fact, 'label' or "
                    f"a manifest column; the item has: {', '.join(known)}",
                    source=record.source,
                    line=record.line,
                    record_id=record.id,
                    modality=f,
                )
        keys.append(tuple(str(v) for v in values))
    return keys


def grouped_order(
    keys: Sequence[Hashable], batch_size: int, generator: torch.Generator, share: float = 1.0
) -> Tensor:
    """One epoch's item order in which consecutive ``batch_size`` chunks are grouped (module docs).

    Args:
        keys: the group of each item (any hashable values; equal keys = same group).
        batch_size: items per batch ``B``.
        generator: the random source (seed it from the run seed and the epoch for resumable runs).
        share: share in [0, 1] of the full batches that stay grouped; the others are random.

    Returns:
        ``long[N]``, a permutation of ``range(N)``, ``N = len(keys)``.

    Raises:
        ValueError: ``batch_size < 1`` or ``share`` outside [0, 1].

    Example:
        >>> import torch
        >>> keys = ["a"] * 4 + ["b"] * 4
        >>> order = grouped_order(keys, 4, torch.Generator().manual_seed(0))
        >>> sorted({keys[i] for i in order[:4].tolist()}) in (["a"], ["b"])
        True
    """
    if batch_size < 1 or not 0.0 <= share <= 1.0:
        raise ValueError(f"grouped_order: need batch_size >= 1 and 0 <= share <= 1, got {batch_size}, {share}")
    n = len(keys)
    index: dict[Hashable, int] = {}
    group = torch.tensor([index.setdefault(k, len(index)) for k in keys], dtype=torch.long)  # [N]
    perm = torch.randperm(n, generator=generator)  # [N]
    rank = torch.empty(len(index), dtype=torch.long)
    rank[torch.randperm(len(index), generator=generator)] = torch.arange(len(index))  # group -> position
    items = perm[torch.sort(rank[group[perm]], stable=True).indices]  # [N] groups contiguous
    n_full = n // batch_size
    chunks = list(items[: n_full * batch_size].split(batch_size))
    picked = torch.randperm(n_full, generator=generator).tolist()
    n_grouped = round(share * n_full)
    kept = [chunks[i] for i in picked[:n_grouped]]
    pool = torch.cat([*(chunks[i] for i in picked[n_grouped:]), items[n_full * batch_size :]])
    pool = pool[torch.randperm(len(pool), generator=generator)]
    n_pool_full = len(pool) // batch_size
    full = kept + list(pool[: n_pool_full * batch_size].split(batch_size))
    shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    return torch.cat([*shuffled, pool[n_pool_full * batch_size :]])
