"""Embedding kind: a precomputed vector ``[dim]`` (inline numbers, an array or a ``.npy`` file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from omnibind.data.kinds.base import KINDS, ModalityKind
from omnibind.data.kinds.signal import load_numeric


@dataclass
class EmbeddingOptions:
    """Options of the embedding kind.

    Attributes:
        dim: vector length; 0 accepts any length and fixes it from the first value loaded.
    """

    dim: int = 0

    def __post_init__(self) -> None:
        if self.dim < 0:
            raise ValueError(f"embedding dim must be 0 (any) or positive, got {self.dim}")


@KINDS.register("embedding")
class EmbeddingKind(ModalityKind):
    """Precomputed vectors. ``transform`` gives float32 ``[dim]``."""

    name = "embedding"
    Options = EmbeddingOptions
    default_encoder = "linear"

    def __init__(self, options: EmbeddingOptions | None = None) -> None:
        super().__init__(options)
        self.dim = self.options.dim

    def load(self, value: Any, base_dir: Path | None) -> np.ndarray:
        expected = f"a vector of length {self.dim}" if self.dim else "a vector"
        arr = load_numeric(value, base_dir, expected)
        if arr.ndim != 1 or arr.shape[0] == 0:
            raise ValueError(f"expected {expected} (1-D, non-empty), got shape {arr.shape}")
        if self.dim == 0:
            self.dim = int(arr.shape[0])
        elif arr.shape[0] != self.dim:
            raise ValueError(f"expected a vector of length {self.dim}, got length {arr.shape[0]}")
        return arr

    def transform(self, raw: np.ndarray) -> Tensor:
        return torch.from_numpy(raw.astype(np.float32))

    def input_shape(self) -> tuple[int, ...]:
        return (self.dim,)
