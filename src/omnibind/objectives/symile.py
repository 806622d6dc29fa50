"""Symile: contrastive loss on the multilinear inner product (MIP) of any number of modalities.

Missing modalities are handled inside the loss (definition in :func:`symile_loss`): each row is scored
only over the modalities it has, and absent items never appear as anchors, positives or negatives.
Rows are grouped by presence pattern, so the all-present batch is one matrix product per anchor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from omnibind.objectives.base import OBJECTIVES, Objective
from omnibind.objectives.functional import (
    Negatives,
    as_scale,
    connected_zero,
    mip,
    negative_logits,
    prepare,
    prepare_negatives,
)
from omnibind.types import Embeddings, HardNegatives, LossOutput

# Elements of the largest intermediate per chunk in the "n2" mode (128 MiB in float64). Chunks are
# recomputed in backward (activation checkpointing), so memory stays bounded whatever N^(M-1) is.
_CHUNK_ELEMENTS = 1 << 24

Permutations = dict[tuple[str, str], Tensor]


def symile_loss(
    embeddings: Embeddings,
    present: Tensor | None,
    logit_scale: Tensor | float,
    negatives: str = "n",
    generator: torch.Generator | None = None,
    permutations: Permutations | None = None,
    own: Tensor | None = None,
    hard_negatives: HardNegatives | None = None,
) -> LossOutput:
    """Symile loss: mean over anchor modalities of a cross-entropy over candidate MIP tuples.

    With every item present this is exactly the loss of the Symile reference code (rajesh-lab/symile),
    in both negative-sampling modes, and it also works for two modalities, where "n2" is one direction
    of CLIP per anchor (the upstream "n_squared" path fails there).

    Missing modalities. For anchor modality i, row a is an *anchor row* iff i is present in a and at
    least one other modality is present in a. Its term uses only S(a), the modalities present in a:

    - positive: ``s * MIP`` of a's own items over S(a);
    - negatives: candidate tuples over the same set S(a) whose every component is present.
      ``"n2"``: every combination of present rows of each j in S(a) minus i (the positive included
      once). ``"n"``: column c holds the tuple (rows ``perm[i, j][c]`` for j in S(a) minus i); it is
      a valid negative for a only if each of those rows has j present, otherwise its logit is -inf.
      The diagonal cell always holds a's true tuple.

    ``L_i`` is the mean over i's anchor rows of ``logsumexp(row logits) - positive``; the loss is the
    mean of ``L_i`` over the anchors that have at least one anchor row. A row with a single present
    modality has no term of its own (its item can still be a negative component of other rows, like
    any present item), and a modality absent from the whole batch is simply never used.

    Args:
        embeddings: modality name -> ``[N, D]`` rows, L2-normalised by the caller (not here).
        present: ``bool[N, M]``, column m for the m-th key of ``embeddings``; None means all present.
        logit_scale: the multiplier ``s`` (already exponentiated), a float or a 0-dim tensor.
        negatives: ``"n"`` (O(N) shuffled negatives per row) or ``"n2"`` (all ``N^(M-1)`` tuples; the
            cost grows as ``N^M * D``, memory is bounded by chunking and recomputation).
        generator: RNG for the ``"n"`` permutations, drawn with ``torch.randperm(N, generator=...)``
            for anchors in ascending order and, inside each anchor, the other modalities in ascending
            order (one draw per pair even when a pair is unused, so draws do not depend on the mask).
            None uses the global RNG, like upstream.
        permutations: explicit ``{(anchor_name, other_name): LongTensor[N]}`` instead of drawing;
            needs every pair that the batch uses. Shuffled modality j has row c = original row
            ``perm[c]``.
        own: ``bool[N]`` or None: the local loss (``objective.local_loss``): only the own anchor rows,
            each ``L_i`` still divided by the global number of anchor rows (the permutations are drawn
            for the whole batch as always), so the local losses of a partition of the rows sum to the loss.
        hard_negatives: hard negatives (:class:`~omnibind.types.HardNegatives`) or None. Each negative item
            adds one candidate tuple to an anchor row ``a``: its *own* values of the modalities
            S(a) minus i, valid when it has all of them and ``negatives.allowed`` holds for ``a``
            (score ``s * MIP(x_a, its tuple)``). The in-batch candidates stay as they are in both
            modes; the negatives' values are never mixed into other tuples, so the candidate set is
            exactly the in-batch one plus K whole items.

    Inputs:
        embeddings[name]: ``[N, D]``; present: ``bool[N, M]``; logit_scale: ``[]``.

    Returns:
        LossOutput with ``loss`` the scalar, ``terms`` holding ``"anchor/<name>"`` = ``L_i`` for each
        contributing anchor and ``"false_negatives"`` = the number of off-diagonal cells (valid, over
        all anchors) that hold a row's own positive tuple (always 0 for ``"n2"``; upstream keeps them
        as negatives and so do we), and ``count`` the number of contributing anchors.

    References:
        Saporta, Puli, Goldstein, Ranganath, "Contrastive Learning Beyond Pairs: Symile", NeurIPS 2024.

    Example:
        >>> import torch
        >>> from omnibind.objectives import symile_loss
        >>> x = torch.nn.functional.normalize(torch.randn(3, 8, 16), dim=-1)
        >>> emb = {"image": x[0], "text": x[1], "audio": x[2]}
        >>> present = torch.ones(8, 3, dtype=torch.bool)
        >>> present[:2, 2] = False  # rows 0 and 1 have no audio
        >>> g = torch.Generator().manual_seed(0)
        >>> out = symile_loss(emb, present, logit_scale=10.0, negatives="n", generator=g)
        >>> out.count, sorted(out.terms)[0]
        (3, 'anchor/audio')
    """
    if negatives not in ("n", "n2"):
        raise ValueError(f"negatives must be 'n' or 'n2', got {negatives!r}")
    names, tensors, mask = prepare(embeddings, present)
    hard = prepare_negatives(hard_negatives, names, mask.shape[0])
    scale = as_scale(logit_scale, tensors[0])
    perms: dict[tuple[int, int], Tensor] = {}
    if negatives == "n":
        perms = _permutations(names, mask.shape[0], generator, permutations, mask.device)

    num_others = mask.sum(dim=1, keepdim=True) - mask.long()  # [N, M]
    anchor_rows = mask & (num_others >= 1)  # [N, M]
    per_anchor: list[Tensor] = []
    terms: dict[str, float] = {}
    false_negatives = 0
    for i, name in enumerate(names):
        rows_i = torch.nonzero(anchor_rows[:, i]).flatten()
        if rows_i.numel() == 0:
            continue
        total = tensors[0].new_zeros(())
        scored = rows_i if own is None else rows_i[own[rows_i]]
        for rows, others in _pattern_groups(mask, scored, i) if scored.numel() else []:
            if negatives == "n2":
                row_losses = _rows_n2(tensors, mask, scale, i, others, rows, hard)
            else:
                row_losses, hits = _rows_n(tensors, mask, scale, i, others, rows, perms, hard)
                false_negatives += hits
            total = total + row_losses.sum()
        loss_i = total / rows_i.numel()
        per_anchor.append(loss_i)
        terms[f"anchor/{name}"] = float(loss_i.detach())
    terms["false_negatives"] = float(false_negatives)
    if not per_anchor:
        return LossOutput(connected_zero(tensors), terms, 0)
    loss = torch.stack(per_anchor).mean()
    if own is not None:  # every rank's backward must reach the gathered embeddings
        loss = loss + connected_zero(tensors)
    return LossOutput(loss, terms, len(per_anchor))


def _permutations(
    names: list[str],
    n: int,
    generator: torch.Generator | None,
    given: Permutations | None,
    device: torch.device,
) -> dict[tuple[int, int], Tensor]:
    """Index-keyed permutations: the given ones, or drawn in the documented order."""
    if given is not None:
        return {
            (names.index(a), names.index(b)): torch.as_tensor(p, device=device).long()
            for (a, b), p in given.items()
            if a in names and b in names
        }
    draw_device = generator.device if generator is not None else device
    return {
        (i, j): torch.randperm(n, generator=generator, device=draw_device).to(device)
        for i in range(len(names))
        for j in range(len(names))
        if j != i
    }


def _pattern_groups(mask: Tensor, rows: Tensor, anchor: int) -> list[tuple[Tensor, list[int]]]:
    """Split anchor rows by presence pattern: ``[(row indices, present non-anchor modalities)]``."""
    if bool(mask[rows].all()):  # the common all-present batch: one group, no sorting
        return [(rows, [j for j in range(mask.shape[1]) if j != anchor])]
    patterns, inverse = torch.unique(mask[rows], dim=0, return_inverse=True)  # [P, M], [g]
    groups = []
    for k, pattern in enumerate(patterns.tolist()):
        others = [j for j, here in enumerate(pattern) if here and j != anchor]
        groups.append((rows[inverse == k], others))
    return groups


def _rows_n(
    tensors: list[Tensor],
    mask: Tensor,
    scale: Tensor,
    anchor: int,
    others: list[int],
    rows: Tensor,
    perms: dict[tuple[int, int], Tensor],
    hard: Negatives | None = None,
) -> tuple[Tensor, int]:
    """Per-row losses ``[g]`` with N shuffled candidate columns, and the count of false negatives."""
    n = mask.shape[0]
    try:
        perm = [perms[(anchor, j)] for j in others]
    except KeyError as err:
        raise ValueError(f"permutations lack the pair (anchor, other) = {err.args[0]}") from None
    shuffled = tensors[others[0]][perm[0]]  # [N, D] product of the shuffled non-anchor rows
    valid = mask[perm[0], others[0]]  # [N] every component of column c present
    for j, p in zip(others[1:], perm[1:], strict=True):
        shuffled = shuffled * tensors[j][p]
        valid = valid & mask[p, j]
    every_row = rows.numel() == n
    x = tensors[anchor] if every_row else tensors[anchor][rows]  # [g, D]
    # Scale before the product so that nothing saved for backward is the [g, N] matrix, which lets the
    # diagonal be overwritten in place below (no [g, N] mask, no second [g, N] copy).
    logits = (x * scale) @ shuffled.T  # [g, N]
    if not bool(valid.all()):
        logits = logits.masked_fill(~valid[None, :], float("-inf"))
    others_rows = [tensors[j] if every_row else tensors[j][rows] for j in others]
    positive = scale * mip([x, *others_rows])  # [g]
    logits[torch.arange(rows.numel(), device=rows.device), rows] = positive  # the true tuple on the diagonal
    # A false negative: an off-diagonal column c whose every shuffled row is one anchor row a != c.
    same = torch.ones(n, dtype=torch.bool, device=rows.device)
    for p in perm[1:]:
        same = same & (p == perm[0])
    is_row = torch.zeros(n, dtype=torch.bool, device=rows.device)
    is_row[rows] = True
    hits = same & is_row[perm[0]] & (perm[0] != torch.arange(n, device=rows.device))
    extra = negative_logits(x * scale, rows, hard, others)  # [g, K'] whole negative tuples, or None
    if extra is not None:
        logits = torch.cat([logits, extra], dim=1)
    return torch.logsumexp(logits, dim=1) - positive, int(hits.sum())


def _rows_n2(
    tensors: list[Tensor],
    mask: Tensor,
    scale: Tensor,
    anchor: int,
    others: list[int],
    rows: Tensor,
    hard: Negatives | None = None,
) -> Tensor:
    """Per-row losses ``[g]`` over every tuple of present candidate rows of the other modalities (and
    the whole tuples of the hard negatives)."""
    x = tensors[anchor][rows]  # [g, D]
    full = bool(mask.all())
    candidates = [tensors[j] if full else tensors[j][mask[:, j]] for j in others]  # [C_j, D] present
    positive = scale * mip([x] + [tensors[j][rows] for j in others])  # [g]
    total = _tuple_logsumexp(x, candidates, scale)  # [g]
    extra = negative_logits(x * scale, rows, hard, others)  # [g, K'] or None
    if extra is not None:  # the in-batch logsumexp is finite, so no row is all -inf
        total = torch.logsumexp(torch.cat([total[:, None], extra], dim=1), dim=1)
    return total - positive


def _tuple_logsumexp(x: Tensor, candidates: list[Tensor], scale: Tensor) -> Tensor:
    """``[g]``: logsumexp over every tuple (one row per candidate tensor) of ``s * MIP(x[a], tuple)``.

    Chunks the anchor rows and the first candidate modality so that no block holds more than about
    ``_CHUNK_ELEMENTS`` elements; with several blocks and autograd on, each block is recomputed in
    backward instead of being kept.
    """
    *lead, last = candidates
    dim = x.shape[1]
    # Elements per (anchor row, item of the first lead modality): tuple products + logits.
    width = math.prod(c.shape[0] for c in lead[1:]) * (dim + last.shape[0])
    first_len = lead[0].shape[0] if lead else 1
    row_block = max(1, _CHUNK_ELEMENTS // (first_len * width))
    first_block = first_len if row_block > 1 else max(1, _CHUNK_ELEMENTS // width)
    blocks = [(r, f) for r in range(0, x.shape[0], row_block) for f in range(0, first_len, first_block)]
    recompute = len(blocks) > 1 and torch.is_grad_enabled()
    out = []
    for r in range(0, x.shape[0], row_block):
        parts = []
        for f in range(0, first_len, first_block):
            block_lead = [lead[0][f : f + first_block], *lead[1:]] if lead else []
            args = (x[r : r + row_block], last, scale, *block_lead)
            if recompute:
                parts.append(checkpoint(_block_logsumexp, *args, use_reentrant=False))
            else:
                parts.append(_block_logsumexp(*args))
        out.append(torch.logsumexp(torch.stack(parts, dim=1), dim=1))
    return torch.cat(out)


def _block_logsumexp(x: Tensor, last: Tensor, scale: Tensor, *lead: Tensor) -> Tensor:
    """``[g]`` logsumexp over the tuples of one block (lead candidates fully expanded)."""
    g, dim = x.shape
    y = x
    for c in lead:
        y = (y[:, None, :] * c[None, :, :]).reshape(-1, dim)  # [g * prod(lead sizes so far), D]
    logits = scale * y @ last.T  # [g * prod(lead), C_last]
    return torch.logsumexp(logits.reshape(g, -1), dim=1)


@OBJECTIVES.register("symile")
class Symile(Objective):
    """Symile objective (multilinear inner product over all present modalities); see :func:`symile_loss`.

    Args:
        negatives: ``"n"`` (O(N) shuffled negatives, drawn from the ``generator`` passed to forward)
            or ``"n2"`` (all ``N^(M-1)`` tuples).

    Inputs:
        embeddings: modality name -> ``[N, D]``; present: ``bool[N, M]`` or None; logit_scale: ``[]``;
        generator: RNG for the ``"n"`` permutations (None: global RNG); rows: ``bool[N]`` own rows
        (local loss) or None; hard_negatives: :class:`~omnibind.types.HardNegatives` or None (one extra
        candidate tuple per negative item, see :func:`symile_loss`).

    Returns:
        LossOutput, as :func:`symile_loss`.

    References:
        Saporta, Puli, Goldstein, Ranganath, "Contrastive Learning Beyond Pairs: Symile", NeurIPS 2024.

    Example:
        >>> import torch
        >>> from omnibind.objectives import create_objective
        >>> objective = create_objective("symile", negatives="n")
        >>> x = torch.nn.functional.normalize(torch.randn(3, 4, 8), dim=-1)
        >>> g = torch.Generator().manual_seed(0)
        >>> out = objective({"a": x[0], "b": x[1], "c": x[2]}, None, torch.tensor(10.0), g)
        >>> out.count
        3
    """

    joint_similarity = "mip"

    def __init__(self, negatives: str = "n") -> None:
        super().__init__()
        if negatives not in ("n", "n2"):
            raise ValueError(f"negatives must be 'n' or 'n2', got {negatives!r}")
        self.negatives = negatives

    def forward(  # type: ignore[override]
        self,
        embeddings: Embeddings,
        present: Tensor | None,
        logit_scale: Tensor,
        generator: torch.Generator | None = None,
        rows: Tensor | None = None,
        hard_negatives: HardNegatives | None = None,
    ) -> LossOutput:
        return symile_loss(
            embeddings,
            present,
            logit_scale,
            negatives=self.negatives,
            generator=generator,
            own=rows,
            hard_negatives=hard_negatives,
        )
