"""The fusion-head protocol: per-modality embeddings plus a presence mask in, class logits out.

Every head takes ``embeddings: {modality: Tensor[B, D]}`` and ``present: bool[B, M]`` (column ``m`` is the
``m``-th declared modality) and returns a :class:`FusionOutput`. Absent rows of an embedding are never
read as values: a head masks them out, skips them or (``late`` with ``impute="zeros"`` or
``"zero-vectors"``, the explicit baselines) replaces them by what a zero input or a zero vector gives.
Every head costs O(M) in the number of modalities.

Heads register themselves in :data:`FUSION_HEADS`; :func:`create_head` builds one by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from omnibind.errors import ConfigError
from omnibind.registry import Registry, nearest
from omnibind.types import Embeddings

# Per-item loss: (logits [B, C], targets) -> [B]; class indices [B] or multi-hot [B, C] targets.
Criterion = Callable[[Tensor, Tensor], Tensor]


@dataclass
class FusionOutput:
    """What every fusion head returns.

    Attributes:
        logits: ``[B, C]`` class scores (softmax or one sigmoid per class, as the task says).
        aux_loss: a head-specific regulariser (a scalar) that training adds to the task loss, or ``None``.
        step_logits: ``[B, S, C]`` predictions after every step of a sequential head (``S = M + 1``: the
            initial state, then one per modality in ``step_order``), or ``None``.
        step_mask: ``bool[B, S]``: which steps changed the item's state (the initial step always counts).
        step_order: the modality of each step after the first.
    """

    logits: Tensor
    aux_loss: Tensor | None = None
    step_logits: Tensor | None = None
    step_mask: Tensor | None = None
    step_order: tuple[str, ...] = ()


class FusionHead(nn.Module):
    """Base class of fusion heads.

    Args:
        modalities: the modality names; column ``m`` of ``present`` refers to ``modalities[m]``.
        dim: width D of the embeddings.
        num_classes: number of classes C.
    """

    def __init__(self, modalities: Sequence[str], dim: int, num_classes: int) -> None:
        super().__init__()
        if not modalities:
            raise ConfigError("a fusion head needs at least one modality")
        if num_classes < 1:
            raise ConfigError(f"a fusion head needs at least one class, got {num_classes}")
        self.modalities = tuple(modalities)
        self.dim = dim
        self.num_classes = num_classes

    def forward(self, embeddings: Embeddings, present: Tensor) -> FusionOutput:  # pragma: no cover
        """Logits ``[B, C]`` from the embeddings of the present modalities; every head overrides it."""
        raise TypeError(f"{type(self).__name__} must implement forward")

    def loss(self, out: FusionOutput, targets: Tensor, criterion: Criterion) -> Tensor:
        """The training loss of ``out``: mean per-item ``criterion`` of the logits, plus ``aux_loss``."""
        loss = criterion(out.logits, targets).mean()
        return loss if out.aux_loss is None else loss + out.aux_loss

    def stack(self, embeddings: Embeddings, present: Tensor) -> Tensor:
        """``[B, M, D]`` embeddings in ``self.modalities`` order; absent rows set to exactly zero.

        Zeroing here is not imputation: the heads mask or skip these rows. It only keeps whatever an
        absent row held (zeros, stale values, NaN) from reaching the arithmetic.
        """
        _check(self.modalities, embeddings, present)
        z = torch.stack([embeddings[m] for m in self.modalities], dim=1)  # [B, M, D]
        return torch.where(present.unsqueeze(-1), z, torch.zeros((), dtype=z.dtype, device=z.device))


def _check(modalities: tuple[str, ...], embeddings: Embeddings, present: Tensor) -> None:
    missing = [m for m in modalities if m not in embeddings]
    if missing:
        raise KeyError(
            f"fusion head expects embeddings of {', '.join(modalities)}; missing {', '.join(missing)}"
        )
    if present.dtype != torch.bool or present.ndim != 2 or present.shape[1] != len(modalities):
        raise ValueError(
            f"present must be bool[B, {len(modalities)}], got {present.dtype} {tuple(present.shape)}"
        )


def mlp(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    """``Linear -> GELU -> Dropout -> Linear``: the small classifier most heads end in."""
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
    )


FUSION_HEADS: Registry[type[FusionHead]] = Registry("fusion head")


def create_head(
    name: str, modalities: Sequence[str], dim: int, num_classes: int, **options: Any
) -> FusionHead:
    """Build the fusion head registered as ``name``.

    Raises:
        KeyError: unknown head (the message lists the known ones).
        ConfigError: an option the head does not take (the message names the nearest one).
    """
    import inspect

    cls = FUSION_HEADS.get(name)
    params = [
        p
        for p in inspect.signature(cls.__init__).parameters
        if p not in ("self", "modalities", "dim", "num_classes")
    ]
    for key in options:
        if key not in params:
            raise ConfigError(
                f"task.head_options: head '{name}' has no option '{key}'{nearest(key, params)}; "
                f"options: {', '.join(params)}"
            )
    return cls(modalities, dim, num_classes, **options)


def list_heads() -> list[str]:
    """Names of the registered fusion heads."""
    return FUSION_HEADS.names()
