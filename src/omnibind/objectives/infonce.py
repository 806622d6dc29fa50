"""Symmetric InfoNCE (CLIP) over all pairs of modalities, or over a star around one anchor modality."""

from __future__ import annotations

import torch
from torch import Tensor

from omnibind.objectives.base import OBJECTIVES, Objective
from omnibind.objectives.functional import (
    Negatives,
    as_scale,
    connected_zero,
    diagonal_cross_entropy,
    negative_logits,
    pair_indices,
    pair_rows,
    prepare,
    prepare_negatives,
)
from omnibind.objectives.multi_positive import multi_positive_infonce_loss
from omnibind.types import Embeddings, HardNegatives, LossOutput


def infonce_loss(
    embeddings: Embeddings,
    present: Tensor | None,
    logit_scale: Tensor | float,
    pairs: str = "all",
    own: Tensor | None = None,
    hard_negatives: HardNegatives | None = None,
) -> LossOutput:
    """Symmetric InfoNCE averaged over ordered pairs of modalities, ignoring absent items.

    The term of the ordered pair (i, j) uses only the rows R where both i and j are present:
    ``CE(s * E_i[R] @ E_j[R].T, diagonal)``. An absent item is never an anchor, a positive or a
    negative. A pair with fewer than 2 such rows is skipped (one row has no negative, so its term would
    be a constant 0). The loss is the mean of the kept terms; with two modalities and every item present
    this is exactly open_clip's ``ClipLoss``. Note that the "CLIP" baseline of the Symile experiments is
    the *sum* of the pairwise symmetric losses, so it is ``M * (M - 1) / 2`` times ours when every
    pair is kept.

    Args:
        embeddings: modality name -> ``[N, D]`` rows (normalise them first; the loss does not).
        present: ``bool[N, M]``, column m for the m-th key of ``embeddings``; None means all present.
        logit_scale: the multiplier ``s`` (already exponentiated), a float or a 0-dim tensor.
        pairs: ``"all"`` for every ordered pair ``i != j``, or a modality name for a star around that
            anchor: the pairs ``(anchor, j)`` and ``(j, anchor)`` (ImageBind / LanguageBind style).
        own: ``bool[N]`` or None: the local loss (``objective.local_loss`` under torchrun) of the rows
            where it is True: those rows as queries against every candidate row, each term divided by
            its global row count, so the local losses of a partition of the rows sum to the loss.
        hard_negatives: hard negatives (:class:`~omnibind.types.HardNegatives`) or None: in the term
            ``a->b`` the negatives that have ``b`` are extra candidates of every query row (columns
            after the ``R`` in-batch ones), except where ``negatives.allowed`` is False:
            ``CE([s E_a[R] @ E_b[R].T | s E_a[R] @ N_b.T], diagonal)``.

    Inputs:
        embeddings[name]: ``[N, D]``; present: ``bool[N, M]``; logit_scale: ``[]``.

    Returns:
        LossOutput with ``loss`` the scalar mean over kept ordered pairs, ``terms`` one float per kept
        ordered pair named ``"a->b"``, and ``count`` the number of kept ordered pairs (0: loss is a
        zero attached to the graph).

    References:
        Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (CLIP),
        ICML 2021; van den Oord et al., "Representation Learning with Contrastive Predictive Coding",
        2018; Girdhar et al., "ImageBind: One Embedding Space To Bind Them All", CVPR 2023 (star).

    Example:
        >>> import torch
        >>> from omnibind.objectives import infonce_loss
        >>> x = torch.nn.functional.normalize(torch.randn(3, 8, 16), dim=-1)
        >>> emb = {"image": x[0], "text": x[1], "audio": x[2]}
        >>> present = torch.ones(8, 3, dtype=torch.bool)
        >>> present[0, 2] = False  # row 0 has no audio
        >>> out = infonce_loss(emb, present, logit_scale=1 / 0.07, pairs="image")
        >>> out.count  # image->text, text->image, image->audio, audio->image
        4
    """
    names, tensors, mask = prepare(embeddings, present)
    unordered = pair_indices(names, pairs)
    hard = prepare_negatives(hard_negatives, names, mask.shape[0])

    scale = as_scale(logit_scale, tensors[0])
    losses: list[Tensor] = []
    terms: dict[str, float] = {}
    for i, j in unordered:
        rows = pair_rows(mask, i, j)
        if rows.numel() < 2:
            continue
        if own is None and hard is None:
            logits = scale * tensors[i][rows] @ tensors[j][rows].T  # [R, R], row = item of i
            directed = [(i, j, diagonal_cross_entropy(logits)), (j, i, diagonal_cross_entropy(logits.T))]
        else:
            directed = [(a, b, _term(tensors, scale, a, b, rows, own, hard)) for a, b in ((i, j), (j, i))]
        for a, b, term in directed:
            losses.append(term)
            terms[f"{names[a]}->{names[b]}"] = float(term.detach())
    if not losses:
        return LossOutput(connected_zero(tensors), {}, 0)
    loss = torch.stack(losses).mean()
    if own is not None:  # every rank's backward must reach the gathered embeddings
        loss = loss + connected_zero(tensors)
    return LossOutput(loss, terms, len(losses))


def _term(
    tensors: list[Tensor],
    scale: Tensor,
    a: int,
    b: int,
    rows: Tensor,
    own: Tensor | None,
    hard: Negatives | None,
) -> Tensor:
    """The ``a->b`` term of the own rows of ``rows`` (all of them without ``own``) as queries against
    all of ``rows`` and the hard negatives that have ``b``, summed and divided by ``|R|``."""
    q = torch.arange(rows.numel(), device=rows.device) if own is None else torch.nonzero(own[rows]).flatten()
    logits = scale * tensors[a][rows[q]] @ tensors[b][rows].T  # [Q, R]
    positive = logits[torch.arange(q.numel(), device=q.device), q]
    extra = negative_logits(scale * tensors[a][rows[q]], rows[q], hard, [b])  # [Q, K_b] or None
    if extra is not None:
        logits = torch.cat([logits, extra], dim=1)  # [Q, R + K_b]
    return (torch.logsumexp(logits, dim=1) - positive).sum() / rows.numel()


@OBJECTIVES.register("infonce")
class InfoNCE(Objective):
    """Symmetric InfoNCE (CLIP) objective; see :func:`infonce_loss`.

    Args:
        pairs: ``"all"`` (every ordered pair of modalities) or the name of an anchor modality (star).

    Inputs:
        embeddings: modality name -> ``[N, D]``; present: ``bool[N, M]`` or None; logit_scale: ``[]``;
        generator: unused (the loss is deterministic); rows: ``bool[N]`` own rows (local loss) or None;
        groups: ``long[N]``, the item of each row when an item has several rows (several values of a
        multi-valued modality), or None: then the loss is
        :func:`~omnibind.objectives.multi_positive.multi_positive_infonce_loss`; hard_negatives:
        :class:`~omnibind.types.HardNegatives` or None (extra candidates, see :func:`infonce_loss`).

    Returns:
        LossOutput, as :func:`infonce_loss`.

    References:
        Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", 2021.

    Example:
        >>> import torch
        >>> from omnibind.objectives import create_objective
        >>> objective = create_objective("infonce", pairs="all")
        >>> x = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
        >>> out = objective({"a": x[0], "b": x[1]}, None, torch.tensor(10.0))
        >>> out.count
        2
    """

    joint_similarity = "sum"

    def __init__(self, pairs: str = "all") -> None:
        super().__init__()
        self.pairs = pairs

    def forward(  # type: ignore[override]
        self,
        embeddings: Embeddings,
        present: Tensor | None,
        logit_scale: Tensor,
        generator: torch.Generator | None = None,
        rows: Tensor | None = None,
        groups: Tensor | None = None,
        hard_negatives: HardNegatives | None = None,
    ) -> LossOutput:
        if groups is not None:  # several rows per item (multi_positive: all): all of them positives
            if rows is not None or hard_negatives is not None:
                raise ValueError("groups= cannot be combined with rows= (local loss) or hard_negatives=")
            return multi_positive_infonce_loss(embeddings, present, logit_scale, groups, pairs=self.pairs)
        return infonce_loss(
            embeddings, present, logit_scale, pairs=self.pairs, own=rows, hard_negatives=hard_negatives
        )
