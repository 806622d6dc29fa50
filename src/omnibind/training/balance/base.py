"""The balance-policy protocol, the step context the hooks see, the method registry and modality dropout.

A :class:`BalancePolicy` has three hooks, called by the supervised loop (``training/classify.py``) in
this order on every step::

    present = policy.mask(batch.present, generator)          # e.g. modality dropout
    policy.backward(loss, context)                           # default: loss.backward()
    policy.after_backward(context)                           # e.g. scale each modality's gradients

:class:`StepContext` gives the hooks what the published methods need, for any number of modalities:
the embeddings and presence of the step, the targets, the per-item criterion, the fusion head and the
parameters of each modality (``groups``: encoder + projection of that modality). A method that needs a
unimodal (or any-subset) prediction asks the head with every other modality masked out as absent
(:meth:`StepContext.subset_logits`), never by zeroing inputs.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from omnibind.errors import ConfigError
from omnibind.fusion.base import Criterion, FusionHead
from omnibind.registry import Registry, nearest
from omnibind.types import Embeddings

_ROWS_PER_PASS = 16384  # subset passes go through the head in calls of at most this many rows


@dataclass
class StepContext:
    """What a balance policy may look at in one training step.

    Attributes:
        step: the optimiser step about to be taken (0-based).
        embeddings: ``{modality: Tensor[B, D]}`` of the step (with their graph to the encoders).
        present: ``bool[B, M]`` after masking (what the head saw).
        targets: class indices ``long[B]`` or multi-hot ``float[B, C]``.
        head: the fusion head.
        criterion: per-item loss ``(logits, targets) -> [B]``.
        groups: per modality, the parameters that only that modality uses (its encoder and projection).
        total_steps: steps of the whole run (for methods active in a window of training); 0 if unknown.
    """

    step: int
    embeddings: Embeddings
    present: Tensor
    targets: Tensor
    head: FusionHead
    criterion: Criterion
    groups: dict[str, list[nn.Parameter]]
    total_steps: int = 0

    def logits_of(self, modalities: list[str]) -> Tensor:
        """``[B, C]`` logits of the head when only ``modalities`` are kept (the rest masked as absent)."""
        keep = torch.tensor([m in modalities for m in self.head.modalities], device=self.present.device)
        return self.head(self.embeddings, self.present & keep).logits

    def masked_logits(self, rows: Tensor, masks: Tensor, grad: bool = False) -> Tensor:
        """The head's logits for items ``rows`` when each sees only the modalities of its mask.

        Rows are batched into head calls of at most ``_ROWS_PER_PASS`` items (an item may appear in many
        rows, each with its own mask).

        Args:
            rows: ``long[R]`` item indices into the step's batch.
            masks: ``bool[R, M]`` presence the head sees for each row (a subset of the item's ``present``).
            grad: False (the default): no gradient, head in eval mode (no dropout), its mode restored
                afterwards; True: in the head's current mode, with the graph to the encoders.

        Returns:
            ``[R, C]`` logits.
        """
        was_training = self.head.training
        if not grad:
            self.head.eval()
        try:
            with nullcontext() if grad else torch.no_grad():
                parts = []
                for start in range(0, len(rows), _ROWS_PER_PASS):
                    r = rows[start : start + _ROWS_PER_PASS]
                    picked = {k: z[r] for k, z in self.embeddings.items()}  # [r, D]
                    parts.append(self.head(picked, masks[start : start + _ROWS_PER_PASS]).logits)
        finally:
            self.head.train(was_training)
        return torch.cat(parts)

    def subset_logits(self, subsets: Sequence[Collection[str]], grad: bool = False) -> tuple[Tensor, Tensor]:
        """The head's logits for each item when it sees only the modalities of each subset it has.

        All subsets go through the head in batched calls (:meth:`masked_logits`): the items are repeated
        ``S`` times and each copy gets the presence mask ``present & subset``.

        Args:
            subsets: ``S`` sets of modality names.
            grad: as in :meth:`masked_logits`.

        Returns:
            ``logits [S, B, C]`` and ``seen bool[S, B]``: whether the item has any modality of the
            subset (where it has none, the head predicted from nothing).
        """
        names = self.head.modalities
        keep = torch.tensor([[m in s for m in names] for s in subsets], dtype=torch.bool)  # [S, M]
        masks = self.present.unsqueeze(0) & keep.to(self.present.device).unsqueeze(1)  # [S, B, M]
        s, b, m = masks.shape
        rows = torch.arange(b, device=self.present.device).repeat(s)  # [S * B]
        logits = self.masked_logits(rows, masks.reshape(s * b, m), grad)
        return logits.view(s, b, -1), masks.any(dim=2)

    def item_losses(self, logits: Tensor) -> Tensor:
        """``[S, B]`` per-item criterion of ``S`` stacked predictions ``[S, B, C]`` against the targets."""
        s, b = logits.shape[:2]
        targets = self.targets.repeat(s, *([1] * (self.targets.ndim - 1)))  # [S * B] or [S * B, C]
        return self.criterion(logits.reshape(s * b, -1), targets).view(s, b)

    def active(self, start: float, end: float) -> bool:
        """Whether this step lies in the window ``[start, end)`` of the run (fractions of its steps).

        A context without ``total_steps`` (0) is always in the window.
        """
        if self.total_steps <= 0:
            return True
        return start * self.total_steps <= self.step < end * self.total_steps


class BalancePolicy:
    """Base class: every hook does the plain thing and there is no state."""

    def mask(self, present: Tensor, generator: torch.Generator) -> Tensor:
        """The presence mask the head sees this step (``bool[B, M]``, a subset of ``present``)."""
        return present

    def backward(self, loss: Tensor, context: StepContext) -> None:
        """Compute gradients of the step (methods with several objectives run several passes here)."""
        loss.backward()

    def after_backward(self, context: StepContext) -> None:
        """Change the gradients before clipping and the optimiser step."""

    def metrics(self) -> dict[str, float]:
        """Figures of the last step for the metrics log (e.g. ``balance/coeff/image``); none by default."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What must survive a checkpoint for a resumed run to take the same steps (running averages)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


BALANCE_METHODS: Registry[type[BalancePolicy]] = Registry("balance method")
"""Balance methods selectable with ``task.balance`` (modality dropout has its own key)."""


def create_policies(task: Any) -> list[BalancePolicy]:
    """The policies a task config asks for: modality dropout first (it sets the mask), then ``task.balance``.

    Raises:
        ConfigError: an unknown balance method, an option the method does not take, or a bad value.
    """
    policies: list[BalancePolicy] = []
    if task.modality_dropout:
        policies.append(ModalityDropout(task.modality_dropout))
    if task.balance:
        try:
            cls = BALANCE_METHODS.get(task.balance)
        except KeyError as err:
            raise ConfigError(f"task.balance: {err.args[0]}") from None
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        for key in task.balance_options:
            if key not in params:
                raise ConfigError(
                    f"task.balance_options: '{task.balance}' has no option '{key}'{nearest(key, params)}; "
                    f"options: {', '.join(params) or 'none'}"
                )
        policies.append(cls(**task.balance_options))
    return policies


def check_option(ok: bool, key: str, expected: str, value: Any) -> None:
    """Raise a :class:`ConfigError` naming ``task.balance_options.<key>`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"task.balance_options.{key} must be {expected}, got {value!r}")


def check_window(start: Any, end: Any) -> None:
    """Check a ``[start, end)`` window given as fractions of the run."""
    for key, value in (("start", start), ("end", end)):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        check_option(number and 0.0 <= value <= 1.0, key, "a fraction of the run in [0, 1]", value)
    check_option(start < end, "end", f"greater than start ({start})", end)


def drop_modalities(present: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Drop each present modality with probability ``p``, but never every modality of an item.

    Each present entry is kept with probability ``1 - p``; an item that would lose all of them keeps one
    of its present modalities chosen uniformly at random. Items with nothing present stay that way.

    Inputs:
        present: ``bool[B, M]``.

    Returns:
        ``bool[B, M]``, a subset of ``present`` with at least one entry per item that had one.

    Example:
        >>> gen = torch.Generator().manual_seed(0)
        >>> kept = drop_modalities(torch.ones(1000, 3, dtype=torch.bool), 0.9, gen)
        >>> bool(kept.any(dim=1).all())
        True
    """
    if p <= 0:
        return present
    keep = present & (torch.rand(present.shape, generator=generator) >= p)  # [B, M]
    empty = present.any(dim=1) & ~keep.any(dim=1)  # [B]: would lose everything
    if empty.any():
        # A random present modality per row: the argmax of uniform noise over the present entries.
        noise = torch.rand(present.shape, generator=generator).masked_fill(~present, -1.0)
        pick = torch.zeros_like(present).scatter_(1, noise.argmax(dim=1, keepdim=True), True)
        keep = keep | (pick & empty.unsqueeze(1))
    return keep


class ModalityDropout(BalancePolicy):
    """Train with random subsets of each item's modalities, so the model works with any of them.

    Args:
        p: probability of dropping each present modality of an item (never all of them).
    """

    def __init__(self, p: float) -> None:
        if not 0.0 <= p < 1.0:
            raise ValueError(f"modality dropout must be in [0, 1), got {p}")
        self.p = p

    def mask(self, present: Tensor, generator: torch.Generator) -> Tensor:
        return drop_modalities(present, self.p, generator)


def modality_groups(encoder: nn.Module, modalities: tuple[str, ...]) -> dict[str, list[nn.Parameter]]:
    """Per modality, the trainable parameters of its encoder and projection (an OmniModel's)."""
    groups = {}
    for m in modalities:
        params = [*encoder.encoders[m].parameters(), *encoder.projections[m].parameters()]
        groups[m] = [p for p in params if p.requires_grad]
    return groups
