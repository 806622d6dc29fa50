"""Batch: per modality the tensor of the present rows only, plus the presence mask ``bool[B, M]``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

BatchValue = Tensor | list[str]


@dataclass
class NegativeRows:
    """Says that the last ``count`` rows of a batch are hard negatives of its items: candidates only.

    Attributes:
        count: how many rows, at the end of the batch, are hard negatives (this process's share of the
            step's negatives).
        width: the negative columns each process contributes to the gathered step (the largest
            ``count`` among the processes; each pads its own to it); with one process, ``count``.
        allowed: ``bool[B_global, world * width]``: negative column ``c`` may be scored against row ``n``
            of the global batch (False for padding and where the negative is an exact duplicate of the
            row's item).
    """

    count: int
    width: int
    allowed: Tensor


@dataclass
class Batch:
    """A mini-batch over ``B`` items and ``M`` modalities.

    Attributes:
        ids: the ``B`` item ids.
        modalities: the ``M`` modality names; column ``m`` of ``present`` refers to ``modalities[m]``.
        values: for each modality with at least one present row, the collated values of its present rows
            only, in batch order (``[n_m, ...]`` tensor, or a list of ``n_m`` strings for text).
            Encoders run on these rows and nothing else.
        present: ``bool[B, M]``.
        labels: per-item labels (``None`` entries where unknown), if any item has one.
        facts: per-item ground-truth facts, if the source provides them.
        metadata: per-item metadata.
        skipped: values that failed to decode when the batch was made (``on_error: skip`` with streaming
            data); they are absent in ``present``.
        items: ``long[B]``, the items' positions in their dataset (a frozen encoder's feature cache is
            keyed by them), or ``None``.
        groups: ``long[B]`` or ``None``: set when the batch holds every value of a multi-valued modality
            (``objective.multi_positive: all``): then rows after the batch's items are the items' further
            values (present in that modality only), and ``groups`` is the dataset position of the item
            each row belongs to (rows of one item are positives of one another).
        negatives: set when the batch ends with hard-negative items of its other rows (training with
            hard negatives), else ``None``.
    """

    ids: list[str]
    modalities: tuple[str, ...]
    values: dict[str, BatchValue]
    present: Tensor
    labels: list[Any] | None = None
    facts: list[dict[str, Any] | None] | None = None
    metadata: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[Any] = field(default_factory=list)
    items: Tensor | None = None
    groups: Tensor | None = None
    negatives: NegativeRows | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, rows: Tensor) -> Batch:
        """The items at positions ``rows`` of this batch (a micro-batch), values gathered, not reloaded."""
        pos = rows.tolist()
        values: dict[str, BatchValue] = {}
        for m, name in enumerate(self.modalities):
            if name not in self.values:
                continue
            column = self.present[:, m]
            row_of = torch.cumsum(column.long(), 0) - 1  # [B]: the row of item b in values[name]
            picked = [int(row_of[p]) for p in pos if column[p]]
            if picked:
                v = self.values[name]
                values[name] = [v[i] for i in picked] if isinstance(v, list) else v[torch.tensor(picked)]
        return Batch(
            ids=[self.ids[p] for p in pos],
            modalities=self.modalities,
            values=values,
            present=self.present[rows],
            labels=[self.labels[p] for p in pos] if self.labels is not None else None,
            facts=[self.facts[p] for p in pos] if self.facts is not None else None,
            metadata=[self.metadata[p] for p in pos] if self.metadata else [],
            items=self.items[rows] if self.items is not None else None,
        )

    def pin_memory(self) -> Batch:
        """This batch with its tensors in pinned memory (the DataLoader calls it on CUDA)."""
        values = {k: v.pin_memory() if isinstance(v, Tensor) else v for k, v in self.values.items()}
        return Batch(
            self.ids,
            self.modalities,
            values,
            self.present.pin_memory(),
            self.labels,
            self.facts,
            self.metadata,
            self.skipped,
            self.items,
            self.groups,
            self.negatives,
        )

    def column(self, modality: str) -> Tensor:
        """``bool[B]``: which items have ``modality``."""
        return self.present[:, self.modalities.index(modality)]


def count_present(values: BatchValue) -> int:
    """Number of rows in a collated value (tensor or list of strings)."""
    return len(values) if isinstance(values, list) else int(values.shape[0])


def empty_present(batch_size: int, num_modalities: int) -> Tensor:
    """An all-False presence mask."""
    return torch.zeros(batch_size, num_modalities, dtype=torch.bool)
