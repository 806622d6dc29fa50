"""Signal kind: a multi-channel time series ``[channels, length]`` from a ``.npy`` file or inline numbers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from omnibind.data.kinds.base import KINDS, ModalityKind, open_file_value, read_structured
from omnibind.data.shards import ShardMember


def load_numeric(value: Any, base_dir: Path | None, what: str) -> np.ndarray:
    """A ``.npy`` path, a shard member (``.npy`` or ``.json``), a list or an array as a finite float64
    array; ``what`` names the expected value.

    Raises:
        ValueError: unreadable file, non-numeric entries, NaN or inf.
    """
    if isinstance(value, (str, Path, ShardMember)):
        value = read_structured(open_file_value(value, base_dir, f"{what} as a .npy file"), what)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"expected {what} as numbers, got non-numeric values") from None
    if not np.isfinite(arr).all():
        raise ValueError(f"expected finite numbers in {what}, found NaN or inf")
    return arr


@dataclass
class SignalOptions:
    """Options of the signal kind.

    Attributes:
        channels: number of channels (a 1-D value is allowed when this is 1).
        length: samples per channel; other lengths are an error (resample the data beforehand).
        normalize: z-score each channel of each item (mean 0, std 1).
    """

    channels: int = 1
    length: int = 1000
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.channels < 1 or self.length < 1:
            raise ValueError("signal channels and length must be positive")


@KINDS.register("signal")
class SignalKind(ModalityKind):
    """Time series. ``transform`` gives float32 ``[channels, length]``."""

    name = "signal"
    Options = SignalOptions
    default_encoder = "conv1d"

    def load(self, value: Any, base_dir: Path | None) -> np.ndarray:
        o = self.options
        arr = load_numeric(value, base_dir, f"a [{o.channels}, {o.length}] signal")
        if arr.ndim == 1 and o.channels == 1:
            arr = arr[None, :]
        if arr.ndim != 2:
            raise ValueError(f"expected a signal of shape [{o.channels}, {o.length}], got shape {arr.shape}")
        if arr.shape[0] != o.channels:
            raise ValueError(
                f"expected {o.channels} signal channel(s), got {arr.shape[0]} (shape {arr.shape})"
            )
        if arr.shape[1] != o.length:
            raise ValueError(f"expected signal length {o.length}, got {arr.shape[1]}")
        return arr

    def transform(self, raw: np.ndarray) -> Tensor:
        x = raw
        if self.options.normalize:
            x = (x - x.mean(axis=1, keepdims=True)) / np.maximum(x.std(axis=1, keepdims=True), 1e-6)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))  # [channels, length]

    def input_shape(self) -> tuple[int, ...]:
        return (self.options.channels, self.options.length)
