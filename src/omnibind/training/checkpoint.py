"""Atomic training checkpoints that resume exactly.

A checkpoint holds everything the next step depends on: model, objective, optimiser and scheduler
states, the step and epoch, the objective's sampling generator, the global RNG states and the early
stopping state. It is written to a temporary file and renamed, so a run killed at any moment leaves
either the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnibind.io import write_bytes_atomic

CHECKPOINT_NAME = "checkpoint.pt"


def rng_state() -> dict[str, Any]:
    """The global RNG states of Python, NumPy and torch."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Serialise ``state`` with ``torch.save`` and write it atomically to ``path``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (our own file, so full unpickling is allowed)."""
    return torch.load(path, map_location="cpu", weights_only=False)
