"""Batch: per modality the tensor of the present rows only, plus the presence mask ``bool[B, M]``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

BatchValue = Tensor | list[str]


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
    """

    ids: list[str]
    modalities: tuple[str, ...]
    values: dict[str, BatchValue]
    present: Tensor
    labels: list[Any] | None = None
    facts: list[dict[str, Any] | None] | None = None
    metadata: list[dict[str, Any]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def column(self, modality: str) -> Tensor:
        """``bool[B]``: which items have ``modality``."""
        return self.present[:, self.modalities.index(modality)]


def count_present(values: BatchValue) -> int:
    """Number of rows in a collated value (tensor or list of strings)."""
    return len(values) if isinstance(values, list) else int(values.shape[0])


def empty_present(batch_size: int, num_modalities: int) -> Tensor:
    """An all-False presence mask."""
    return torch.zeros(batch_size, num_modalities, dtype=torch.bool)
