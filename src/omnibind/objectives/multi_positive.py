"""Multi-positive InfoNCE (1-to-K): every value of an item is a positive of the item's other modalities."""

from __future__ import annotations

import torch
from torch import Tensor

from omnibind.objectives.functional import as_scale, connected_zero, pair_indices, prepare
from omnibind.types import Embeddings, LossOutput


def multi_positive_infonce_loss(
    embeddings: Embeddings,
    present: Tensor | None,
    logit_scale: Tensor | float,
    groups: Tensor,
    pairs: str = "all",
) -> LossOutput:
    """Symmetric InfoNCE in which the rows of one item (its several values) are all positives.

    Row ``r`` belongs to item ``groups[r]``; an item may have several rows, each present in some
    modalities (``objective.multi_positive: all`` gives a multi-valued modality's further values rows of
    their own). For the ordered pair (a, b), only items with both a and b present take part. A query is
    a row ``q`` with ``a`` present; its positives P(q) are the rows with ``b`` of the same item, its
    negatives N(q) the rows with ``b`` of the other items (the item's own other values are neither):

        loss_q = mean over p in P(q) of [ log(exp(l_qp) + sum over n in N(q) of exp(l_qn)) - l_qp ]

    with ``l = s * E_a E_b^T``: each positive is contrasted with the negatives only, as K separate
    InfoNCE terms (DreamLIP's sub-caption positives; the 1-to-K paper's one-to-K contrast). The pair's
    term is the mean over items of the mean over their queries, so every item weighs the same however
    many values it has. With one row per item it is exactly :func:`~omnibind.objectives.infonce_loss`
    (up to rounding). The loss is the mean of the kept terms (a pair with fewer than 2 items is skipped).

    Args:
        embeddings: modality name -> ``[N, D]`` rows (normalise them first).
        present: ``bool[N, M]`` or None (all present).
        logit_scale: the multiplier ``s``.
        groups: ``long[N]``: the item of each row.
        pairs: ``"all"`` or an anchor modality (star), as in :func:`~omnibind.objectives.infonce_loss`.

    Inputs:
        embeddings[name]: ``[N, D]``; present: ``bool[N, M]``; groups: ``long[N]``.

    Returns:
        LossOutput: ``loss``, one term per kept ordered pair (``"a->b"``) and their count.

    References:
        Zheng et al., "DreamLIP: Language-Image Pre-training with Long Captions", ECCV 2024;
        Ma et al., "Improving the Consistency in Cross-Lingual Cross-Modal Retrieval with 1-to-K
        Contrastive Learning", KDD 2024.

    Example:
        >>> import torch
        >>> from omnibind.objectives.multi_positive import multi_positive_infonce_loss
        >>> x = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
        >>> emb = {"image": x, "text": x.flip(0)}
        >>> present = torch.tensor([[1, 1], [1, 1], [1, 1], [0, 1], [0, 1]], dtype=torch.bool)
        >>> groups = torch.tensor([0, 1, 2, 0, 0])  # rows 3 and 4: two more texts of item 0
        >>> multi_positive_infonce_loss(emb, present, 10.0, groups).count
        2
    """
    names, tensors, mask = prepare(embeddings, present)
    unordered = pair_indices(names, pairs)
    item = torch.unique(groups.to(mask.device), return_inverse=True)[1]  # [N] in 0..G-1
    has = torch.zeros(int(item.max()) + 1, len(names), dtype=torch.bool, device=mask.device)
    has.index_put_((item,), mask, accumulate=True)  # [G, M]: which modalities each item has
    scale = as_scale(logit_scale, tensors[0])
    losses: list[Tensor] = []
    terms: dict[str, float] = {}
    for i, j in unordered:
        both = has[:, i] & has[:, j]  # [G]
        if int(both.sum()) < 2:
            continue
        for a, b in ((i, j), (j, i)):
            term = _directed_term(tensors[a], tensors[b], mask[:, a], mask[:, b], item, both, scale)
            losses.append(term)
            terms[f"{names[a]}->{names[b]}"] = float(term.detach())
    if not losses:
        return LossOutput(connected_zero(tensors), {}, 0)
    return LossOutput(torch.stack(losses).mean(), terms, len(losses))


def _directed_term(
    query: Tensor, target: Tensor, has_q: Tensor, has_t: Tensor, item: Tensor, both: Tensor, scale: Tensor
) -> Tensor:
    """The ``a->b`` term: queries are the rows with ``a``, candidates the rows with ``b``, of ``both``."""
    q = torch.nonzero(has_q & both[item]).flatten()  # [Q]
    c = torch.nonzero(has_t & both[item]).flatten()  # [C]
    logits = scale * query[q] @ target[c].T  # [Q, C]
    positive = item[q][:, None] == item[c][None, :]  # [Q, C]
    negatives = torch.logsumexp(logits.masked_fill(positive, float("-inf")), dim=1, keepdim=True)  # [Q, 1]
    per_pair = torch.logaddexp(logits, negatives) - logits  # [Q, C]: -log p of each positive vs negatives
    per_query = (per_pair * positive).sum(dim=1) / positive.sum(dim=1)  # [Q]
    groups_q = item[q]
    size = int(item.max()) + 1
    total = torch.zeros(size, dtype=logits.dtype, device=logits.device).index_add(0, groups_q, per_query)
    count = torch.zeros(size, dtype=logits.dtype, device=logits.device).index_add(
        0, groups_q, torch.ones_like(per_query)
    )
    kept = count > 0
    return (total[kept] / count[kept]).mean()
