"""Callbacks of the training loop: progress bar, metrics log, early stopping.

The loop calls ``on_step`` after every optimiser step, ``on_validate`` after every validation and
``on_mining`` after every round of hard-negative mining; a callback never changes the step itself, so the
loop stays readable and the order of events is fixed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from omnibind.io import write_text_atomic


class Callback:
    """Base class; override the events you need."""

    def on_start(self, total_steps: int, start_step: int) -> None:
        """Called once before the first step (``start_step`` > 0 when resuming)."""

    def on_step(self, step: int, logs: dict[str, Any]) -> None:
        """Called after optimiser step ``step`` (1-based) with its training logs."""

    def on_validate(self, step: int, metrics: dict[str, float]) -> None:
        """Called after a validation with its metrics."""

    def on_mining(self, step: int, stats: dict[str, float]) -> None:
        """Called after a hard-negative mining round, before optimiser step ``step`` (1-based, so a
        resumed run's log drops the round of a step it runs again), with its figures."""

    def on_end(self) -> None:
        """Called once after the last step."""


class ProgressBar(Callback):
    """A tqdm bar with the loss, the items per second and the share of time spent waiting for data."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def on_start(self, total_steps: int, start_step: int) -> None:
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True
            )

    def on_step(self, step: int, logs: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                loss=f"{logs['train/loss']:.3f}", items_s=f"{logs['items_per_s']:.0f}", refresh=False
            )

    def on_validate(self, step: int, metrics: dict[str, float]) -> None:
        if self.bar is not None:
            shown = {k.split("/", 1)[-1]: f"{v:.3f}" for k, v in metrics.items() if k.startswith("val/mean")}
            self.bar.write(f"step {step}: " + ", ".join(f"{k} {v}" for k, v in shown.items()))

    def on_mining(self, step: int, stats: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.write(
                f"epoch {stats['mining/epoch']:.0f}: mined hard negatives in {stats['mining/seconds']:.1f} s "
                f"({stats['mining/negatives_per_item']:.1f} per item)"
            )

    def on_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


class MetricsLog(Callback):
    """Appends one JSON object per logged step to ``metrics.jsonl``.

    On resume the file is first rewritten (atomically) to the lines at or before the checkpoint's step,
    so a resumed run's log equals an uninterrupted run's.
    """

    def __init__(self, path: Path, every: int = 10) -> None:
        self.path = path
        self.every = max(1, every)

    def on_start(self, total_steps: int, start_step: int) -> None:
        kept = [r for r in read_history(self.path) if r.get("step", 0) <= start_step]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def _append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()

    def on_step(self, step: int, logs: dict[str, Any]) -> None:
        if step % self.every == 0 or step == 1:
            self._append({"step": step, **logs})

    def on_validate(self, step: int, metrics: dict[str, float]) -> None:
        self._append({"step": step, **metrics})

    def on_mining(self, step: int, stats: dict[str, float]) -> None:
        self._append({"step": step, **stats})


def read_history(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines of a ``metrics.jsonl`` (a torn last line from a killed run is ignored)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


class EarlyStopping:
    """Tracks a validation metric; ``improved`` on a new best, ``should_stop`` after ``patience`` misses.

    Args:
        metric: the key in the validation metrics (e.g. ``val/mean_r@1``).
        patience: validations without improvement before stopping.
        mode: ``max`` or ``min``.
    """

    def __init__(self, metric: str, patience: int, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"early stopping mode must be 'max' or 'min', got {mode!r}")
        self.metric = metric
        self.patience = patience
        self.mode = mode
        self.best = -math.inf if mode == "max" else math.inf
        self.misses = 0

    def update(self, metrics: dict[str, float]) -> bool:
        """Record a validation; return True if it is a new best."""
        if self.metric not in metrics:
            known = ", ".join(sorted(metrics))
            raise KeyError(f"early stopping metric '{self.metric}' is not computed; available: {known}")
        value = metrics[self.metric]
        better = value > self.best if self.mode == "max" else value < self.best
        if better:
            self.best, self.misses = value, 0
        else:
            self.misses += 1
        return better

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` validations in a row brought no improvement."""
        return self.misses >= self.patience

    def state(self) -> dict[str, Any]:
        """Checkpointable state."""
        return {"best": self.best, "misses": self.misses}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`."""
        self.best, self.misses = state["best"], state["misses"]
