"""The Objective base module and its registry.

An objective is a pure function of embeddings (``omnibind.objectives.functional`` and one function per
objective file) plus a thin ``nn.Module`` that holds options and parameters. Every objective module has
the same call::

    out = objective(embeddings, present, logit_scale, generator=None)   # -> LossOutput
    out = objective(embeddings, present, logit_scale, generator, rows=own)   # local_loss: own rows only

``rows`` (``bool[N]``, the items of this process under torchrun) asks for the *local* loss: only those
rows as queries, every row as a candidate, normalised by the counts of the whole batch, so that the
local losses of a partition of the rows sum to the loss. The built-in objectives take it; an objective
that does not cannot be used with ``objective.local_loss``.

``hard_negatives`` (:class:`~omnibind.types.HardNegatives`: extra candidate items with their presence
and a ``bool[N, K]`` mask of the rows that may score them) adds hard negatives to the candidates::

    out = objective(embeddings, present, logit_scale, generator, hard_negatives=negatives)

The built-in objectives take it; an objective that does not cannot train with hard negatives.

Every objective module also has a ``joint_similarity`` class attribute telling evaluation how to score a
composed query: ``"sum"`` (sum of pairwise cosines) or ``"mip"`` (multilinear inner product).
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from omnibind.errors import ConfigError
from omnibind.registry import Registry, nearest
from omnibind.types import Embeddings, LossOutput


class Objective(nn.Module):
    """Base class of the objective modules."""

    joint_similarity: ClassVar[str] = "sum"

    def forward(  # type: ignore[override]
        self,
        embeddings: Embeddings,
        present: Tensor | None,
        logit_scale: Tensor,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        raise TypeError(f"{type(self).__name__} must implement forward")


OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def create_objective(name: str, matryoshka: dict[str, Any] | None = None, **options: Any) -> Objective:
    """Instantiate the objective registered as ``name``; unknown options raise ``ConfigError``.

    With ``matryoshka={"dims": [...], "weights": [...]}`` the objective is wrapped in
    :class:`~omnibind.objectives.matryoshka.Matryoshka` (the same loss on each nested prefix).
    """
    if matryoshka is not None:
        from omnibind.objectives.matryoshka import Matryoshka

        if (
            not isinstance(matryoshka, dict)
            or set(matryoshka) - {"dims", "weights"}
            or "dims" not in matryoshka
        ):
            raise ConfigError(
                "objective.matryoshka must be {dims: [...], weights: [...]} (weights optional), "
                f"got {matryoshka!r}"
            )
        return Matryoshka(create_objective(name, **options), **matryoshka)
    cls = OBJECTIVES.get(name)
    params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in options:
        if key not in params:
            raise ConfigError(
                f"objective '{name}' has no option '{key}'{nearest(key, params)}; "
                f"options: {', '.join(params) or 'none'}"
            )
    return cls(**options)


def list_objectives() -> list[str]:
    """Names of every registered objective."""
    return OBJECTIVES.names()
