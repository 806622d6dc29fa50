"""What both training loops share: the step plan, the optimiser and schedule, the loop's own random
generator, early stopping, and a checkpoint that restores all of them exactly.

The contrastive trainer (``trainer.py``) and the supervised one (``classify.py``) differ in their step;
everything around the step is this one object, so a fix to resuming or scheduling lands in both.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from omnibind.config import TrainConfig
from omnibind.training.callbacks import EarlyStopping
from omnibind.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from omnibind.training.optim import param_groups, warmup_cosine


class Stateful(Protocol):
    """Anything with ``state_dict`` / ``load_state_dict`` (a module, a balance policy)."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


@dataclass(frozen=True)
class StepPlan:
    """How many steps a run takes and when it validates and checkpoints.

    Attributes:
        batch_size: items per step (the training split's size if that is smaller).
        steps_per_epoch: full batches per epoch (the last partial batch is dropped).
        total: steps of the whole run (``epochs`` epochs, capped by ``max_steps``).
        eval_every: validate every this many steps.
        checkpoint_every: checkpoint every this many steps.
    """

    batch_size: int
    steps_per_epoch: int
    total: int
    eval_every: int
    checkpoint_every: int


def plan_steps(tc: TrainConfig, num_items: int) -> StepPlan:
    """The :class:`StepPlan` of training ``num_items`` items as ``tc`` says."""
    batch_size = min(tc.batch_size, num_items)
    per_epoch = max(1, num_items // batch_size)
    total = per_epoch * tc.epochs
    if tc.max_steps:
        total = min(total, tc.max_steps)
    every = (tc.eval_every or per_epoch, tc.checkpoint_every or per_epoch)
    return StepPlan(batch_size, per_epoch, total, *every)


class LoopState:
    """Optimiser (AdamW), warm-up + cosine schedule, the loop's generator and early stopping.

    Args:
        tc: the ``train`` section of the config.
        modules: the trained modules by name (their state goes into the checkpoint under that name).
        num_items: size of the training split.
        states: other objects whose ``state_dict()`` goes into the checkpoint under that name and comes
            back through ``load_state_dict`` (balance policies with running averages).

    Attributes:
        plan: the :class:`StepPlan`.
        step: optimiser steps done so far (restored by :meth:`restore`).
        generator: the loop's own random source (Symile negatives, modality dropout), seeded
            ``seed + 1`` so that it is independent of initialisation.
        stopper: early stopping, or ``None`` when ``early_stopping_metric`` is empty.
    """

    def __init__(
        self,
        tc: TrainConfig,
        modules: dict[str, nn.Module],
        num_items: int,
        states: dict[str, Stateful] | None = None,
    ) -> None:
        self.modules = modules
        self.states = dict(states or {})
        self.plan = plan_steps(tc, num_items)
        self.optimizer = torch.optim.AdamW(param_groups(modules.values(), tc.weight_decay), lr=tc.lr)
        self.scheduler = warmup_cosine(self.optimizer, tc.warmup_steps, self.plan.total)
        self.generator = torch.Generator().manual_seed(tc.seed + 1)
        self.stopper = (
            EarlyStopping(tc.early_stopping_metric, tc.early_stopping_patience, tc.early_stopping_mode)
            if tc.early_stopping_metric
            else None
        )
        self.step = 0

    def parameters(self) -> list[torch.nn.Parameter]:
        """Every parameter the optimiser updates (for gradient clipping)."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def save(self, path: Path) -> None:
        """Write an atomic checkpoint of the modules and of everything the next step depends on."""
        save_checkpoint(
            path,
            {
                "step": self.step,
                "modules": {name: m.state_dict() for name, m in self.modules.items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "generator": self.generator.get_state(),
                "rng": rng_state(),
                "early_stopping": self.stopper.state() if self.stopper else None,
                "states": {name: obj.state_dict() for name, obj in self.states.items()},
            },
        )

    def restore(self, path: Path) -> None:
        """Load a checkpoint written by :meth:`save` into the modules and this state."""
        state = load_checkpoint(path)
        for name, module in self.modules.items():
            module.load_state_dict(state["modules"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        set_rng_state(state["rng"])
        if self.stopper is not None and state.get("early_stopping"):
            self.stopper.load_state(state["early_stopping"])
        for name, obj in self.states.items():
            obj.load_state_dict(state.get("states", {}).get(name, {}))
        self.step = int(state["step"])
