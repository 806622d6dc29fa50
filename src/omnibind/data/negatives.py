"""Hard negatives of the training items: which they are, which items are duplicates, which join a step.

A :class:`NegativeTable` holds, for each training item, the positions of its hard negatives (the
manifest's ``negatives`` column, :func:`column_table`, or mined from the current model by
``omnibind.training.mining``), and which items are *exact duplicates* of which: two items are when they
share an identical prepared value in some modality (the same text, the same tensor bytes), counting every
value of a multi-valued modality. A duplicate is never a negative of its twin: mining skips it, and
:meth:`NegativeTable.step` masks it.

:meth:`NegativeTable.step` turns the global batch of a training step into the negatives that join it:
the union of its items' negatives, without the items already in the batch (they are candidates
anyway), each once, in order of first mention; under torchrun each one is encoded by the process whose
items mention it first, and the columns are laid out rank after rank, each rank's padded to the same
width, so that the gathered step is the same on every process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from omnibind.data.batch import Batch, NegativeRows
from omnibind.data.record import Record
from omnibind.data.views import ViewPick
from omnibind.errors import DataError


def _csr(owners: np.ndarray, values: np.ndarray, size: int) -> tuple[Tensor, Tensor]:
    """``(ptr long[size + 1], values long[E])``: the values of owner ``o`` are ``values[ptr[o]:ptr[o+1]]``."""
    order = np.lexsort((values, owners))
    counts = np.bincount(owners, minlength=size)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    return torch.from_numpy(ptr.astype(np.int64)), torch.from_numpy(values[order].astype(np.int64))


def _gather_csr(ptr: Tensor, values: Tensor, items: Tensor) -> tuple[Tensor, Tensor]:
    """``(position in items, value)`` for every value of every item of ``items``."""
    starts, ends = ptr[items], ptr[items + 1]
    counts = ends - starts
    position = torch.repeat_interleave(torch.arange(len(items)), counts)
    offsets = torch.cumsum(counts, 0) - counts
    within = torch.arange(int(counts.sum())) - torch.repeat_interleave(offsets, counts)
    return position, values[torch.repeat_interleave(starts, counts) + within]


class Duplicates:
    """Which items share an identical value: groups of two or more items with one same value.

    Args:
        owners: ``int[V]`` the item of each value digest.
        digests: ``int64[V]`` the digests (modality name and value).
        size: the number of items.
    """

    def __init__(self, owners: np.ndarray, digests: np.ndarray, size: int) -> None:
        pairs = np.unique(np.stack([digests, owners]), axis=1) if len(owners) else np.zeros((2, 0), np.int64)
        keys, first, counts = np.unique(pairs[0], return_index=True, return_counts=True)
        shared = counts >= 2  # a digest held by two or more distinct items
        group_of = np.full(len(keys), -1, dtype=np.int64)
        group_of[shared] = np.arange(int(shared.sum()))
        where = np.searchsorted(keys, pairs[0])
        keep = group_of[where] >= 0
        group, item = group_of[where][keep], pairs[1][keep]
        self.size = size
        self.item_ptr, self.item_groups = _csr(item, group, size)  # item -> its groups
        self.group_ptr, self.group_items = _csr(group, item, int(shared.sum()))  # group -> its items

    def of(self, items: Tensor) -> tuple[Tensor, Tensor]:
        """``(position in items, duplicate item)`` pairs: every item sharing a value with ``items[p]``
        (the item itself included when it has a duplicate)."""
        position, group = _gather_csr(self.item_ptr, self.item_groups, items)
        where, item = _gather_csr(self.group_ptr, self.group_items, group)
        return position[where], item

    def mask(self, rows: Tensor, cols: Tensor) -> Tensor:
        """``bool[len(rows), len(cols)]``: True where the items share an identical value."""
        pr, gr = _gather_csr(self.item_ptr, self.item_groups, rows)
        pc, gc = _gather_csr(self.item_ptr, self.item_groups, cols)
        out = torch.zeros(len(rows), len(cols), dtype=torch.bool)
        if len(gr) and len(gc):
            groups, inverse = torch.unique(torch.cat([gr, gc]), return_inverse=True)
            a = torch.zeros(len(rows), len(groups))
            b = torch.zeros(len(cols), len(groups))
            a[pr, inverse[: len(gr)]] = 1
            b[pc, inverse[len(gr) :]] = 1
            out = (a @ b.T) > 0
        return out


def _digest(name: str, value: Any) -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update(name.encode() + b"\0")
    if isinstance(value, str):
        h.update(b"s" + value.encode())
    else:
        t = value.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode() + t.numpy().tobytes())
    return int.from_bytes(h.digest(), "little", signed=True)


def item_batches(data: Any, batch_size: int, pick: ViewPick) -> Iterator[Batch]:
    """The items of ``data`` in order, ``batch_size`` at a time, with the values ``pick`` says."""
    for start in range(0, len(data), batch_size):
        yield data.batch(torch.arange(start, min(start + batch_size, len(data))), pick)


def find_duplicates(data: Any, batch_size: int = 256, progress: bool = False) -> Duplicates:
    """The exact duplicates among the items of ``data`` (a ``Dataset`` or ``LazyDataset``): every value
    of every item, each view of a multi-valued modality, is prepared once and hashed."""
    from tqdm.auto import tqdm

    owners: list[int] = []
    digests: list[int] = []
    steps = range(0, len(data), batch_size)
    batches = item_batches(data, batch_size, ViewPick("all"))
    for batch in tqdm(
        batches, total=len(steps), desc="finding duplicates", disable=not progress, leave=False
    ):
        positions = batch.items if batch.items is not None else torch.arange(len(batch))
        for m, name in enumerate(batch.modalities):
            if name not in batch.values:
                continue
            values = batch.values[name]
            rows = positions[batch.present[:, m]].tolist()
            owners += rows
            digests += [_digest(name, values[r]) for r in range(len(rows))]
    return Duplicates(np.asarray(owners, dtype=np.int64), np.asarray(digests, dtype=np.int64), len(data))


class NegativeTable:
    """The hard negatives of every training item, with the duplicates that must never be negatives.

    Args:
        table: ``long[N, k]`` positions of each item's negatives, ``-1`` where there are fewer.
        duplicates: the exact duplicates among the items.

    Attributes:
        mined_epoch: the epoch whose start mined the table (``-1``: not mined, e.g. given by a column).
        rounds: mining rounds so far, with their timings (checkpointed with the table).
    """

    def __init__(self, table: Tensor, duplicates: Duplicates) -> None:
        self.table = table.long()
        self.duplicates = duplicates
        self.mined_epoch = -1
        self.rounds: list[dict[str, float]] = []

    @classmethod
    def empty(cls, size: int, duplicates: Duplicates) -> NegativeTable:
        """A table without negatives yet (before the first mining round)."""
        return cls(torch.full((size, 0), -1, dtype=torch.long), duplicates)

    def step(self, chunk: Tensor, rank: int = 0, world: int = 1) -> tuple[Tensor, NegativeRows | None]:
        """The negatives of the global batch ``chunk`` (``long[B]`` item positions) for process ``rank``.

        Returns:
            ``(items, rows)``: the positions of the negatives this process encodes (``long[K_r]``) and the
            :class:`~omnibind.data.batch.NegativeRows` of the step (``None`` when it has none).
        """
        b, k = len(chunk), self.table.shape[1]
        listed = self.table[chunk].reshape(-1)  # [B * k], row-major: item by item
        row = torch.arange(b).repeat_interleave(k)
        keep = (listed >= 0) & ~torch.isin(listed, chunk)
        listed, row = listed[keep], row[keep]
        if listed.numel() == 0:
            return listed, None
        unique, inverse = torch.unique(listed, return_inverse=True)
        first = torch.full((len(unique),), len(listed), dtype=torch.long)
        first = first.scatter_reduce(0, inverse, torch.arange(len(listed)), reduce="amin")
        order = torch.argsort(first)
        negatives = unique[order]  # [K] in order of first mention
        rank_of = row[first[order]] // (b // world)  # non-decreasing: ranks hold consecutive rows
        counts = torch.bincount(rank_of, minlength=world)
        width = int(counts.max())
        start = torch.cumsum(counts, 0) - counts
        column = rank_of * width + torch.arange(len(negatives)) - start[rank_of]
        allowed = torch.zeros(b, world * width, dtype=torch.bool)
        allowed[:, column] = ~self.duplicates.mask(chunk, negatives)
        return negatives[rank_of == rank], NegativeRows(int(counts[rank]), width, allowed)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps: the table, the epoch it was mined at, the rounds' timings."""
        return {"table": self.table.clone(), "mined_epoch": self.mined_epoch, "rounds": list(self.rounds)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (an empty state, from a run without the table, changes nothing)."""
        if not state:
            return
        self.table = state["table"].long()
        self.mined_epoch = int(state["mined_epoch"])
        self.rounds = list(state.get("rounds", []))


def column_table(records: list[Record], duplicates: Duplicates) -> NegativeTable | None:
    """The :class:`NegativeTable` of the records' ``negatives`` column, or ``None`` when no record has one.

    Raises:
        DataError: an id that is not a training item (naming the record, the field ``negatives`` and
            the id), or an item listed as its own negative.
    """
    if not any(r.negatives for r in records):
        return None
    position = {r.id: i for i, r in enumerate(records)}
    lists: list[list[int]] = []
    for record in records:
        found = []
        for nid in record.negatives or []:
            if nid not in position:
                raise DataError(
                    f"hard negative id {nid!r} is not an item of the training split (an unknown id, or an "
                    "item of the val or test split); every id in 'negatives' must be a training item",
                    source=record.source,
                    line=record.line,
                    record_id=record.id,
                    modality="negatives",
                )
            if nid == record.id:
                raise DataError(
                    "lists the item itself as a hard negative; an item is its own positive",
                    source=record.source,
                    line=record.line,
                    record_id=record.id,
                    modality="negatives",
                )
            found.append(position[nid])
        lists.append(list(dict.fromkeys(found)))
    width = max(len(x) for x in lists)
    table = torch.full((len(records), width), -1, dtype=torch.long)
    for i, found in enumerate(lists):
        table[i, : len(found)] = torch.tensor(found, dtype=torch.long)
    return NegativeTable(table, duplicates)
