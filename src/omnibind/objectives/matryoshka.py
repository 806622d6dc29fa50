"""Matryoshka: any objective applied to nested prefixes of the embeddings, summed with weights.

The embeddings are computed once; each prefix ``[:, :k]`` is renormalised to unit length and handed to the
inner objective, and the loss is ``sum_k w_k * L_k`` (a weighted *sum*, not a mean, as in the reference
code). A model trained this way can be searched on a short prefix first and re-ranked at full width
(``omnibind.index``). In a config::

    objective: {name: infonce, matryoshka: {dims: [32, 64, 128, 256], weights: [1, 1, 1, 1]}}

``create_objective`` sees the ``matryoshka`` option and wraps the inner objective in :class:`Matryoshka`.
:func:`mnrl_loss` is the one-direction, cosine-scaled InfoNCE of sentence-transformers, kept here because
the Matryoshka reference vectors are computed over it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from omnibind.errors import ConfigError
from omnibind.objectives.base import Objective
from omnibind.objectives.functional import zero_absent
from omnibind.types import Embeddings, HardNegatives, LossOutput

LossFn = Callable[..., LossOutput]


def mnrl_loss(
    anchor: Tensor, positive: Tensor, negative: Tensor | None = None, scale: float = 20.0
) -> Tensor:
    """Multiple-negatives ranking loss: one-direction InfoNCE of anchors against candidates, on cosines.

    Candidates are the positives stacked over the optional extra negatives; row ``a`` of the anchors has
    candidate ``a`` as its positive and every other candidate as a negative. Inputs need not be unit rows
    (the cosine normalises).

    Args:
        anchor: ``[N, d]``.
        positive: ``[N, d]``.
        negative: ``[K, d]`` extra negatives (hard negatives), or None.
        scale: multiplier on the cosines (20 = temperature 0.05).

    Returns:
        the scalar mean over anchors of ``logsumexp_c S[a, c] - S[a, a]`` with ``S = scale * cos(A, C)``.

    References:
        Henderson et al., "Efficient Natural Language Response Suggestion for Smart Reply", 2017;
        sentence-transformers ``MultipleNegativesRankingLoss``.

    Example:
        >>> import torch
        >>> a = torch.eye(3)
        >>> round(float(mnrl_loss(a, a, scale=20.0)), 6)
        0.0
    """
    candidates = positive if negative is None else torch.cat([positive, negative])  # [N + K, d]
    scores = scale * F.normalize(anchor, dim=-1) @ F.normalize(candidates, dim=-1).T  # [N, N + K]
    labels = torch.arange(anchor.shape[0], device=anchor.device)
    return F.cross_entropy(scores, labels)


def _check_dims(dims: Sequence[int], weights: Sequence[float] | None) -> tuple[list[int], list[float]]:
    dims = [int(k) for k in dims]
    if not dims or any(k <= 0 for k in dims):
        raise ConfigError(f"objective.matryoshka.dims must be positive prefix widths, got {dims}")
    if len(set(dims)) != len(dims):
        raise ConfigError(f"objective.matryoshka.dims has repeated widths: {dims}")
    if weights is None:
        weights = [1.0] * len(dims)
    weights = [float(w) for w in weights]
    if len(weights) != len(dims):
        raise ConfigError(
            f"objective.matryoshka.weights has {len(weights)} values for {len(dims)} dims; give one per dim"
        )
    return dims, weights


def matryoshka_loss(
    loss_fn: LossFn,
    embeddings: Embeddings,
    present: Tensor | None,
    logit_scale: Tensor | float,
    dims: Sequence[int],
    weights: Sequence[float] | None = None,
    **kwargs: Any,
) -> LossOutput:
    """Apply ``loss_fn`` to each renormalised prefix of the embeddings and sum the losses with weights.

    Args:
        loss_fn: any objective call ``(embeddings, present, logit_scale, **kwargs) -> LossOutput``.
        embeddings: modality name -> ``[N, D]``.
        present: ``bool[N, M]`` or None (all present); absent rows are zeroed before cutting, so their
            gradient is exactly zero whatever they held.
        logit_scale: passed to ``loss_fn`` unchanged.
        dims: prefix widths, each at most D (order is kept in ``terms``).
        weights: one weight per width (default all 1).
        kwargs: passed to ``loss_fn`` (``generator``, ...); ``hard_negatives``
            (:class:`~omnibind.types.HardNegatives`) are cut and renormalised like the embeddings.

    Inputs:
        embeddings[name]: ``[N, D]``; present: ``bool[N, M]``; logit_scale: ``[]``.

    Returns:
        LossOutput with ``loss = sum_k w_k * L_k``, ``terms["dim/<k>"] = L_k`` plus the inner terms of the
        full width prefix (the largest ``k``), and ``count`` the inner count at that width.

    References:
        Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022.

    Example:
        >>> import torch
        >>> from omnibind.objectives import infonce_loss
        >>> x = torch.randn(2, 6, 16)
        >>> out = matryoshka_loss(infonce_loss, {"a": x[0], "b": x[1]}, None, 10.0, dims=[4, 16])
        >>> sorted(k for k in out.terms if k.startswith("dim/"))
        ['dim/16', 'dim/4']
    """
    dims, weights = _check_dims(dims, weights)
    names = list(embeddings)
    width = embeddings[names[0]].shape[-1]
    if max(dims) > width:
        raise ConfigError(f"objective.matryoshka.dims {dims} exceeds the embedding width {width}")
    if present is not None:
        embeddings = {n: zero_absent(embeddings[n], present[:, m].bool()) for m, n in enumerate(names)}
    hard: HardNegatives | None = kwargs.pop("hard_negatives", None)
    if hard is not None:
        hard = HardNegatives(
            {
                n: zero_absent(x, hard.present[:, m].bool())
                for m, (n, x) in enumerate(hard.embeddings.items())
            },
            hard.present,
            hard.allowed,
        )
    total: Tensor | None = None
    terms: dict[str, float] = {}
    widest = max(dims)
    count = 0
    for k, w in zip(dims, weights, strict=True):
        cut = {n: F.normalize(x[:, :k], dim=-1) for n, x in embeddings.items()}  # [N, k] unit rows
        if hard is not None:
            kwargs["hard_negatives"] = HardNegatives(
                {n: F.normalize(x[:, :k], dim=-1) for n, x in hard.embeddings.items()},
                hard.present,
                hard.allowed,
            )
        out = loss_fn(cut, present, logit_scale, **kwargs)
        total = w * out.loss if total is None else total + w * out.loss
        terms[f"dim/{k}"] = float(out.loss.detach())
        if k == widest:
            terms.update(out.terms)
            count = out.count
    assert total is not None
    return LossOutput(total, terms, count)


class Matryoshka(Objective):
    """Wraps an objective so that it trains every prefix of ``dims``; see :func:`matryoshka_loss`.

    Args:
        inner: the objective applied at each prefix width (its parameters, if any, are shared).
        dims: prefix widths, e.g. ``[32, 64, 128, 256]``.
        weights: one weight per width (default all 1); the loss is the weighted sum.

    Inputs:
        embeddings: modality name -> ``[N, D]``; present: ``bool[N, M]`` or None; logit_scale: ``[]``;
        generator: passed to the inner objective; rows: passed to it too (``local_loss``);
        hard_negatives: :class:`~omnibind.types.HardNegatives`, cut to each prefix like the embeddings.

    Returns:
        LossOutput, as :func:`matryoshka_loss`.

    References:
        Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022.

    Example:
        >>> import torch
        >>> from omnibind.objectives import create_objective
        >>> objective = create_objective("infonce", matryoshka={"dims": [4, 8]})
        >>> x = torch.nn.functional.normalize(torch.randn(2, 5, 8), dim=-1)
        >>> out = objective({"a": x[0], "b": x[1]}, None, torch.tensor(10.0))
        >>> objective.joint_similarity
        'sum'
    """

    def __init__(self, inner: Objective, dims: Sequence[int], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.dims, self.weights = _check_dims(dims, weights)
        # composed queries are scored as the inner objective was trained
        self.joint_similarity = inner.joint_similarity  # type: ignore[misc]

    def forward(  # type: ignore[override]
        self,
        embeddings: Embeddings,
        present: Tensor | None,
        logit_scale: Tensor,
        generator: torch.Generator | None = None,
        rows: Tensor | None = None,
        hard_negatives: HardNegatives | None = None,
    ) -> LossOutput:
        extra: dict[str, Any] = {"generator": generator}
        if rows is not None:
            extra["rows"] = rows
        if hard_negatives is not None:
            extra["hard_negatives"] = hard_negatives
        return matryoshka_loss(self.inner, embeddings, present, logit_scale, self.dims, self.weights, **extra)
