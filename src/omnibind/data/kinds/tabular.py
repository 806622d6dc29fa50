"""Tabular kind: named numeric columns -> a standardised float32 vector ``[n_columns]``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from omnibind.data.kinds.base import KINDS, ModalityKind, open_file_value, read_structured
from omnibind.data.shards import ShardMember
from omnibind.registry import nearest


@dataclass
class TabularOptions:
    """Options of the tabular kind.

    Attributes:
        columns: the column names, in order. A dict value must have exactly these keys; a list value gives
            them in this order. Empty: only lists are accepted, their length fixed by the first value.
    """

    columns: list[str] = field(default_factory=list)


@KINDS.register("tabular")
class TabularKind(ModalityKind):
    """Rows of numbers. :meth:`fit` learns per-column mean and std on the training rows; ``transform``
    standardises with them once fitted (or restored with :meth:`load_state`)."""

    name = "tabular"
    Options = TabularOptions
    default_encoder = "mlp"

    def __init__(self, options: TabularOptions | None = None) -> None:
        super().__init__(options)
        self.columns = list(self.options.columns)
        self.n = len(self.columns)
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None

    def _column(self, i: int) -> str:
        return self.columns[i] if i < len(self.columns) else f"#{i}"

    def load(self, value: Any, base_dir: Path | None) -> np.ndarray:
        if isinstance(value, ShardMember):  # a .json (inline values) or .npy (an array) member
            value = read_structured(open_file_value(value, base_dir, "a table row"), "a table row")
        if isinstance(value, dict):
            if not self.columns:
                raise ValueError("expected a list of numbers (declare 'columns' to use named values)")
            extra = [k for k in value if k not in self.columns]
            if extra:
                raise ValueError(
                    f"unexpected column '{extra[0]}'{nearest(str(extra[0]), self.columns)}; "
                    f"expected columns: {', '.join(self.columns)}"
                )
            missing = [c for c in self.columns if c not in value]
            if missing:
                raise ValueError(
                    f"missing column '{missing[0]}'; expected columns: {', '.join(self.columns)}"
                )
            items = [value[c] for c in self.columns]
        elif isinstance(value, (list, tuple, np.ndarray)):
            items = (
                list(np.asarray(value, dtype=object).reshape(-1))
                if isinstance(value, np.ndarray)
                else list(value)
            )
            if self.n == 0:
                self.n = len(items)
            if len(items) != self.n:
                raise ValueError(
                    f"expected {self.n} numbers ({', '.join(self.columns) or 'columns'}), got {len(items)}"
                )
        else:
            raise ValueError(
                f"expected a dict {{column: number}} or a list of numbers, got {type(value).__name__}"
            )
        out = np.empty(len(items), dtype=np.float64)
        for i, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, (int, float, np.integer, np.floating)):
                raise ValueError(f"column '{self._column(i)}': expected a number, got {item!r}")
            if not math.isfinite(float(item)):
                raise ValueError(f"column '{self._column(i)}': expected a finite number, got {item!r}")
            out[i] = float(item)
        return out

    def fit(self, raws: list[Any]) -> None:
        if not raws:
            return
        table = np.stack(raws)  # [N, n_columns]
        self.mean = table.mean(axis=0)
        self.std = np.maximum(table.std(axis=0), 1e-6)

    def state(self) -> dict[str, Any]:
        if self.mean is None or self.std is None:
            return {}
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def load_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.mean = np.asarray(state["mean"], dtype=np.float64)
        self.std = np.asarray(state["std"], dtype=np.float64)
        self.n = self.n or len(self.mean)

    def transform(self, raw: np.ndarray) -> Tensor:
        x = raw if self.mean is None or self.std is None else (raw - self.mean) / self.std
        return torch.from_numpy(x.astype(np.float32))  # [n_columns]

    def input_shape(self) -> tuple[int, ...]:
        return (self.n,)
