"""Pairwise sigmoid loss (SigLIP) over all unordered pairs of modalities."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omnibind.objectives.base import OBJECTIVES, Objective
from omnibind.objectives.functional import (
    Negatives,
    as_scale,
    connected_zero,
    negative_logits,
    pair_rows,
    prepare,
    prepare_negatives,
)
from omnibind.types import Embeddings, HardNegatives, LossOutput


def siglip_loss(
    embeddings: Embeddings,
    present: Tensor | None,
    logit_scale: Tensor | float,
    logit_bias: Tensor | float,
    own: Tensor | None = None,
    hard_negatives: HardNegatives | None = None,
) -> LossOutput:
    """Pairwise sigmoid loss averaged over unordered pairs of modalities, ignoring absent items.

    For the pair (i, j) with R the rows where both are present, ``L = s * E_i[R] @ E_j[R].T + b`` and
    the term is ``sum over the R x R cells of softplus(-z * L) / |R|`` with ``z = +1`` on the diagonal
    and ``-1`` elsewhere (divided by the number of rows, not cells, as in SigLIP and open_clip). A pair
    with no such row is skipped; a single row still gives its positive term. With two modalities and
    every item present this is exactly open_clip's ``SigLipLoss`` on one process.

    Args:
        embeddings: modality name -> ``[N, D]`` rows (normalise them first; the loss does not).
        present: ``bool[N, M]``, column m for the m-th key of ``embeddings``; None means all present.
        logit_scale: the multiplier ``s`` (already exponentiated), a float or a 0-dim tensor.
        logit_bias: the additive bias ``b``, a float or a 0-dim tensor.
        own: ``bool[N]`` or None: the local loss (``objective.local_loss``): only the cells whose row
            (the first modality of the pair) is an own row, divided by the global ``|R|``, so the local
            losses of a partition of the rows sum to the loss.
        hard_negatives: hard negatives (:class:`~omnibind.types.HardNegatives`) or None: extra cells with
            ``z = -1``, both ways round: each scored row's ``i`` against the negatives that have ``j``,
            and its ``j`` against the negatives that have ``i`` (cells where ``negatives.allowed`` is
            False are left out); still divided by ``|R|``.

    Inputs:
        embeddings[name]: ``[N, D]``; present: ``bool[N, M]``; logit_scale, logit_bias: ``[]``.

    Returns:
        LossOutput with ``loss`` the mean over kept unordered pairs, ``terms`` one float per kept pair
        named ``"a-b"``, and ``count`` the number of kept pairs.

    References:
        Zhai et al., "Sigmoid Loss for Language Image Pre-Training" (SigLIP), ICCV 2023.

    Example:
        >>> import torch
        >>> from omnibind.objectives import siglip_loss
        >>> x = torch.nn.functional.normalize(torch.randn(3, 8, 16), dim=-1)
        >>> out = siglip_loss({"a": x[0], "b": x[1], "c": x[2]}, None, 10.0, -10.0)
        >>> out.count
        3
    """
    names, tensors, mask = prepare(embeddings, present)
    hard = prepare_negatives(hard_negatives, names, mask.shape[0])
    scale = as_scale(logit_scale, tensors[0])
    bias = as_scale(logit_bias, tensors[0])
    losses: list[Tensor] = []
    terms: dict[str, float] = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            rows = pair_rows(mask, i, j)
            if rows.numel() == 0:
                continue
            queries = rows if own is None else rows[own[rows]]  # [Q] rows of i that this call scores
            logits = scale * tensors[i][queries] @ tensors[j][rows].T + bias  # [Q, R]
            sign = (queries[:, None] == rows[None, :]).to(logits.dtype) * 2 - 1  # +1 on the positives
            term = F.softplus(-sign * logits).sum()
            if hard is not None:
                term = term + _negative_cells(tensors, scale, bias, i, j, queries, hard)
            term = term / rows.numel()
            losses.append(term)
            terms[f"{names[i]}-{names[j]}"] = float(term.detach())
    if not losses:
        return LossOutput(connected_zero(tensors), {}, 0)
    loss = torch.stack(losses).mean()
    if own is not None:  # every rank's backward must reach the gathered embeddings
        loss = loss + connected_zero(tensors)
    return LossOutput(loss, terms, len(losses))


def _negative_cells(
    tensors: list[Tensor], scale: Tensor, bias: Tensor, i: int, j: int, queries: Tensor, hard: Negatives
) -> Tensor:
    """The sum of ``softplus(L)`` (label -1) over the hard-negative cells of the scored rows: their
    ``i`` against the negatives' ``j`` and their ``j`` against the negatives' ``i``."""
    total = tensors[0].new_zeros(())
    for a, b in ((i, j), (j, i)):
        extra = negative_logits(scale * tensors[a][queries], queries, hard, [b])  # [Q, K_b], -inf: left out
        if extra is not None:
            total = total + F.softplus(extra + bias).sum()  # softplus(-inf) = 0, with a zero gradient
    return total


@OBJECTIVES.register("siglip")
class SigLIP(Objective):
    """Pairwise sigmoid objective with a learnable bias; see :func:`siglip_loss`.

    Args:
        logit_bias_init: initial value of the learnable bias ``b`` (SigLIP uses -10 with ``s = 10``).

    Inputs:
        embeddings: modality name -> ``[N, D]``; present: ``bool[N, M]`` or None; logit_scale: ``[]``;
        generator: unused; rows: ``bool[N]`` own rows (local loss) or None; hard_negatives:
        :class:`~omnibind.types.HardNegatives` or None (extra label -1 cells, see :func:`siglip_loss`).

    Returns:
        LossOutput, as :func:`siglip_loss`.

    References:
        Zhai et al., "Sigmoid Loss for Language Image Pre-Training" (SigLIP), ICCV 2023.

    Example:
        >>> import torch
        >>> from omnibind.objectives import create_objective
        >>> objective = create_objective("siglip", logit_bias_init=-10.0)
        >>> x = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
        >>> out = objective({"a": x[0], "b": x[1]}, None, torch.tensor(10.0))
        >>> out.loss.backward()
        >>> objective.logit_bias.grad is not None
        True
    """

    joint_similarity = "sum"

    def __init__(self, logit_bias_init: float = -10.0) -> None:
        super().__init__()
        self.logit_bias = nn.Parameter(torch.tensor(float(logit_bias_init)))

    def forward(  # type: ignore[override]
        self,
        embeddings: Embeddings,
        present: Tensor | None,
        logit_scale: Tensor,
        generator: torch.Generator | None = None,
        rows: Tensor | None = None,
        hard_negatives: HardNegatives | None = None,
    ) -> LossOutput:
        return siglip_loss(
            embeddings, present, logit_scale, self.logit_bias, own=rows, hard_negatives=hard_negatives
        )
