"""Balanced multimodal training: policies that act on the presence mask and on per-modality gradients.

A :class:`BalancePolicy` has three hooks, called by the supervised loop (``training/classify.py``) in
this order on every step::

    present = policy.mask(batch.present, generator)          # e.g. modality dropout
    policy.backward(loss, context)                           # default: loss.backward()
    policy.after_backward(context)                           # e.g. scale each modality's gradients

:class:`StepContext` gives the hooks what the published methods need, for any number of modalities:
the embeddings and presence of the step, the targets, the per-item criterion, the fusion head and the
parameters of each modality (``groups``: encoder + projection of that modality). A method that needs a
unimodal prediction asks the head with every other modality masked out (:meth:`StepContext.logits_of`),
never by zeroing inputs. OGM-GE (scale ``groups[m]`` gradients by ``1 - tanh(alpha * rho_m)``), AGM
(Shapley over masked subsets) and MMPareto (one extra backward per modality in ``backward``) fit these
hooks; only modality dropout is implemented so far.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from omnibind.errors import ConfigError
from omnibind.fusion.base import Criterion, FusionHead
from omnibind.registry import Registry, nearest
from omnibind.types import Embeddings


@dataclass
class StepContext:
    """What a balance policy may look at in one training step.

    Attributes:
        step: the optimiser step about to be taken (0-based).
        embeddings: ``{modality: Tensor[B, D]}`` of the step.
        present: ``bool[B, M]`` after masking (what the head saw).
        targets: class indices ``long[B]`` or multi-hot ``float[B, C]``.
        head: the fusion head.
        criterion: per-item loss ``(logits, targets) -> [B]``.
        groups: per modality, the parameters that only that modality uses (its encoder and projection).
    """

    step: int
    embeddings: Embeddings
    present: Tensor
    targets: Tensor
    head: FusionHead
    criterion: Criterion
    groups: dict[str, list[nn.Parameter]]

    def logits_of(self, modalities: list[str]) -> Tensor:
        """``[B, C]`` logits of the head when only ``modalities`` are kept (the rest masked as absent)."""
        keep = torch.tensor([m in modalities for m in self.head.modalities], device=self.present.device)
        return self.head(self.embeddings, self.present & keep).logits


class BalancePolicy:
    """Base class: every hook does the plain thing."""

    def mask(self, present: Tensor, generator: torch.Generator) -> Tensor:
        """The presence mask the head sees this step (``bool[B, M]``, a subset of ``present``)."""
        return present

    def backward(self, loss: Tensor, context: StepContext) -> None:
        """Compute gradients of the step (methods with several objectives run several passes here)."""
        loss.backward()

    def after_backward(self, context: StepContext) -> None:
        """Change the gradients before clipping and the optimiser step."""


BALANCE_METHODS: Registry[type[BalancePolicy]] = Registry("balance method")
"""Balance methods selectable with ``task.balance`` (modality dropout has its own key)."""


def create_policies(task: Any) -> list[BalancePolicy]:
    """The policies a task config asks for: modality dropout first (it sets the mask), then ``task.balance``.

    Raises:
        ConfigError: an unknown balance method, or an option the method does not take.
    """
    import inspect

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
