"""Any-to-any retrieval: R@K, MRR and median rank for every ordered pair of modalities and composed queries.

Inputs follow :mod:`omnibind.types`: ``embeddings`` maps a modality to ``[N, D]`` L2-normalised rows (rows of
absent items hold zeros), ``present`` is ``bool[N, M]`` with column ``m`` = the ``m``-th key of
``embeddings``. A query ``q->t`` ranks every item whose ``t`` is present against each item whose ``q`` is
present; a composed query ``a+b->t`` uses the items in which all of ``a`` and ``b`` are present.

Which targets are *relevant* to a query is decided by one of three modes:

- ``item``: the same item (same id), or an item whose value in the target modality is identical to the
  query item's own (given ``values``): the model cannot tell two identical inputs apart, so they are equally
  correct answers, and under pessimistic ties counting only the query's own item would rank each of them
  above it;
- ``label``: the same label;
- ``facts``: equal on every ground-truth fact that can be read both from the query modalities and from the
  target (see :func:`counting_facts`). When no fact counts for a combination, relevance falls back to
  ``item`` (identical target values included).

A missing value (``None`` label, or a fact absent from an item's dict or ``None``) is unknown, so that item
is relevant only to itself (its own id).
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from omnibind.data.sources import FactSpec

RELEVANCE_MODES = ("item", "label", "facts")
SIMILARITIES = ("sum", "mip")
_CHUNK = 1024  # query rows scored at a time: [chunk, nt] floats stay small for nt ~ 1e4..1e5


def counting_facts(
    query_modalities: Sequence[str],
    target: str,
    facts: Sequence[Mapping[str, Any] | None] | None,
    fact_specs: Mapping[str, FactSpec] | None,
) -> tuple[str, ...]:
    """The facts that decide relevance for ``query_modalities -> target``, sorted by name.

    With ``fact_specs`` None every fact name found in ``facts`` counts. Otherwise only facts named in
    ``fact_specs`` count: a non-joint fact iff ``target`` and at least one query modality carry it; a joint
    fact iff ``target`` is its owner and every other carrier is among the query modalities.
    """
    if fact_specs is None:
        names = {name for item in facts or [] if item for name in item}
        return tuple(sorted(names))
    query = set(query_modalities)
    out = []
    for name, spec in fact_specs.items():
        carriers = set(spec.carriers)
        if spec.joint:
            if target == spec.owner and (carriers - {spec.owner}) <= query:
                out.append(name)
        elif target in carriers and query & carriers:
            out.append(name)
    return tuple(sorted(out))


def _hashable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, np.ndarray):
        return tuple(value.tolist())
    if isinstance(value, Tensor):
        return tuple(value.tolist()) if value.dim() else value.item()
    return value


def _item_codes(
    mode: str,
    fact_names: tuple[str, ...],
    ids: Sequence[Any],
    labels: Sequence[Any] | None,
    facts: Sequence[Mapping[str, Any] | None] | None,
    target_values: Sequence[Hashable | None] | None = None,
) -> Tensor:
    """One integer per item such that two items are relevant to each other iff their codes are equal.

    ``target_values`` (per item, a key of its value in the target modality, ``None`` where absent) makes
    "the same item" mean "an identical target value".

    Returns:
        ``long[N]``.
    """
    keys: list[tuple[str, Any]] = []
    for i, item_id in enumerate(ids):
        value = None if target_values is None else target_values[i]
        own = ("id", item_id) if value is None else ("value", value)
        if mode == "item" or (mode == "facts" and not fact_names):
            keys.append(own)
        elif mode == "label":
            label = None if labels is None else labels[i]
            keys.append(own if label is None else ("v", _hashable(label)))
        else:
            item = (facts[i] if facts is not None else None) or {}
            values = tuple(item.get(name) for name in fact_names)
            keys.append(own if any(v is None for v in values) else ("v", _hashable(values)))
    table: dict[tuple[str, Any], int] = {}
    return torch.tensor([table.setdefault(k, len(table)) for k in keys], dtype=torch.long)


def _check_mode(mode: str, labels: Sequence[Any] | None, facts: Sequence[Any] | None) -> None:
    if mode not in RELEVANCE_MODES:
        raise ValueError(f"relevance mode must be one of {', '.join(RELEVANCE_MODES)}, got {mode!r}")
    if mode == "label" and labels is None:
        raise ValueError("relevance mode 'label' needs labels, got None")
    if mode == "facts" and facts is None:
        raise ValueError("relevance mode 'facts' needs facts, got None")


def relevance_matrix(
    query_idx: Tensor | Sequence[int],
    target_idx: Tensor | Sequence[int],
    query_modalities: Sequence[str],
    target: str,
    mode: str,
    ids: Sequence[Any],
    labels: Sequence[Any] | None = None,
    facts: Sequence[Mapping[str, Any] | None] | None = None,
    fact_specs: Mapping[str, FactSpec] | None = None,
    values: Mapping[str, Sequence[Hashable | None]] | None = None,
) -> Tensor:
    """Which targets are relevant to which queries.

    Args:
        query_idx: item indices (into ``ids``/``labels``/``facts``) of the queries, ``[nq]``.
        target_idx: item indices of the candidate targets, ``[nt]``.
        query_modalities: the modalities the query is made of (one, or several for a composed query).
        target: the target modality.
        mode: ``item``, ``label`` or ``facts`` (see the module docstring).
        ids: item ids, ``N`` of them.
        labels: item labels (mode ``label``).
        facts: per item a dict of ground-truth facts (mode ``facts``).
        fact_specs: which modalities carry each fact; None means every fact counts.
        values: per modality, a key per item of its value (``None`` where absent), so that "the same
            item" includes identical target values (see the module docstring).

    Returns:
        ``bool[nq, nt]``.

    Example:
        >>> relevance_matrix([0, 1], [0, 1, 2], ["a"], "b", "label", ["x", "y", "z"], [0, 1, 0]).tolist()
        [[True, False, True], [False, True, False]]
    """
    _check_mode(mode, labels, facts)
    names = counting_facts(query_modalities, target, facts, fact_specs) if mode == "facts" else ()
    codes = _item_codes(mode, names, ids, labels, facts, (values or {}).get(target))  # [N]
    q = codes[torch.as_tensor(query_idx, dtype=torch.long)]
    t = codes[torch.as_tensor(target_idx, dtype=torch.long)]
    return q[:, None] == t[None, :]


def _first_relevant_ranks(scores: Tensor, relevant: Tensor, ties: str) -> Tensor:
    """1-based rank of the best-scored relevant target per query; 0 where no target is relevant.

    Inputs:
        scores: ``[n, nt]``; relevant: ``bool[n, nt]``.
    """
    scores = scores.float()
    best = torch.where(relevant, scores, float("-inf")).amax(dim=1, keepdim=True)  # [n, 1]
    if ties == "optimistic":
        above = (scores > best).float().sum(dim=1)  # float sum: faster than summing bools as int64
    else:  # pessimistic: every non-relevant target scored equal to the best relevant one ranks above it
        above = ((scores >= best) & ~relevant).float().sum(dim=1)
    has_relevant = best.squeeze(1) > float("-inf")
    return torch.where(has_relevant, above.long() + 1, 0)


def _summarise(ranks: Tensor, ks: Sequence[int]) -> dict[str, float]:
    """Metrics from first-relevant ranks (queries with rank 0, i.e. nothing relevant, excluded)."""
    ranks = ranks[ranks > 0].double()
    n = int(ranks.numel())
    out: dict[str, float] = {}
    for k in ks:
        out[f"r@{k}"] = float((ranks <= k).double().mean()) if n else float("nan")
    out["mrr"] = float((1.0 / ranks).mean()) if n else float("nan")
    out["median_rank"] = float(np.median(ranks.numpy())) if n else float("nan")
    out["n"] = n
    return out


def mean_rank_variance(ranks: Tensor, groups: Tensor) -> float:
    """Mean Rank Variance (MRV), the 1-to-K paper's consistency measure across an item's values.

    For every item with at least 2 queries (its several values of a multi-valued modality, each used as a
    query), take the population variance (divide by the count) of the 1-based ranks of the first relevant
    target over those queries; MRV is the mean of these variances over such items. 0 means every value of
    an item finds its target at the same rank; queries with rank 0 (nothing relevant) are left out.

    Inputs:
        ranks: ``long[n]`` 1-based ranks (0: no relevant target); groups: ``long[n]``, each query's item.

    Returns:
        MRV, or NaN when no item has 2 ranked queries.

    References:
        Ma et al., "Improving the Consistency in Cross-Lingual Cross-Modal Retrieval with 1-to-K
        Contrastive Learning", KDD 2024.

    Example:
        >>> mean_rank_variance(torch.tensor([1, 3, 2, 2, 5]), torch.tensor([0, 0, 1, 1, 2]))
        0.5
    """
    keep = ranks > 0
    ranks, groups = ranks[keep].double(), groups[keep]
    variances = []
    for g in torch.unique(groups):
        r = ranks[groups == g]
        if r.numel() >= 2:
            variances.append(float(((r - r.mean()) ** 2).mean()))
    return float(np.mean(variances)) if variances else float("nan")


def rank_metrics(
    scores: Tensor,
    relevant: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
    chunk_size: int = _CHUNK,
) -> dict[str, float]:
    """Recall at K, mean reciprocal rank and median rank of the first relevant target.

    With ``ties="pessimistic"`` (the default) every non-relevant target whose score equals or exceeds the
    query's best relevant target ranks above it, so a collapsed model (all scores equal) scores what it
    deserves, not R@1 = 1. ``ties="optimistic"`` counts only strictly higher scores.

    Args:
        scores: similarity of each query to each target.
        relevant: which targets are relevant to each query.
        ks: the cut-offs of recall.
        ties: ``optimistic`` or ``pessimistic``.
        chunk_size: queries processed at a time.

    Inputs:
        scores: ``[nq, nt]``; relevant: ``bool[nq, nt]``.

    Returns:
        ``{"r@K": fraction of queries with a relevant target in the top K, ..., "mrr": mean of 1/rank,
        "median_rank": median 1-based rank (the mean of the two middle ones for an even count), "n": number
        of queries with at least one relevant target}``. Queries with no relevant target are excluded; with
        none left every metric is NaN and ``n`` is 0.

    Example:
        >>> s = torch.tensor([[0.9, 0.1], [0.8, 0.2]])
        >>> rank_metrics(s, torch.eye(2, dtype=torch.bool), ks=(1,))
        {'r@1': 0.5, 'mrr': 0.75, 'median_rank': 1.5, 'n': 2}
    """
    if scores.shape != relevant.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and relevant {tuple(relevant.shape)} differ in shape")
    if ties not in ("optimistic", "pessimistic"):
        raise ValueError(f"ties must be 'optimistic' or 'pessimistic', got {ties!r}")
    relevant = relevant.bool()
    ranks = [
        _first_relevant_ranks(scores[i : i + chunk_size], relevant[i : i + chunk_size], ties)
        for i in range(0, scores.shape[0], chunk_size)
    ]
    return _summarise(torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long), ks)


def joint_scores(query_embs: Sequence[Tensor], target: Tensor, similarity: str = "sum") -> Tensor:
    """Score composed queries against targets.

    Args:
        query_embs: one ``[nq, D]`` tensor per query modality (rows aligned: row i is one item).
        target: ``[nt, D]`` target embeddings.
        similarity: ``sum``: the sum over query modalities of the dot product with the target;
            ``mip``: the multilinear inner product ``sum_d prod_i q_i[d] * t[d]`` (Symile). For one query
            modality both are the dot product.

    Returns:
        ``[nq, nt]``.

    References:
        Saporta et al., "Contrasting with Symile", NeurIPS 2024 (the multilinear inner product).

    Example:
        >>> q = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.5]])]
        >>> joint_scores(q, torch.tensor([[1.0, 1.0]]), "mip").tolist()
        [[0.5]]
    """
    if not query_embs:
        raise ValueError("joint_scores needs at least one query modality")
    if similarity == "sum":
        query = torch.stack(list(query_embs)).sum(dim=0)  # [nq, D]; sum_i q_i.t == (sum_i q_i).t
    elif similarity == "mip":
        query = torch.stack(list(query_embs)).prod(dim=0)  # [nq, D]
    else:
        raise ValueError(f"similarity must be one of {', '.join(SIMILARITIES)}, got {similarity!r}")
    return query @ target.T


def _auto_mode(labels: Sequence[Any] | None, facts: Sequence[Any] | None) -> str:
    if facts is not None and any(f for f in facts):
        return "facts"
    if labels is not None and any(label is not None for label in labels):
        return "label"
    return "item"


def query_combinations(
    modalities: Sequence[str], joint: bool = True, max_joint: int | None = None
) -> list[tuple[tuple[str, ...], str]]:
    """Every ``(query modalities, target)`` evaluated: ordered pairs first, then composed queries by size.

    Composed queries are the subsets of size >= 2 (up to ``max_joint``) of the modalities other than the
    target, in the order of ``modalities``.
    """
    combos = [((q,), t) for q in modalities for t in modalities if q != t]
    if joint:
        top = len(modalities) - 1 if max_joint is None else min(max_joint, len(modalities) - 1)
        for size in range(2, top + 1):
            for t in modalities:
                others = [m for m in modalities if m != t]
                combos += [(qs, t) for qs in itertools.combinations(others, size)]
    return combos


def evaluate_retrieval(
    embeddings: Mapping[str, Tensor],
    present: Tensor,
    ids: Sequence[Any],
    labels: Sequence[Any] | None = None,
    facts: Sequence[Mapping[str, Any] | None] | None = None,
    fact_specs: Mapping[str, FactSpec] | None = None,
    relevance: str = "auto",
    similarity: str = "sum",
    joint: bool = True,
    max_joint: int | None = None,
    ks: Sequence[int] = (1, 5, 10),
    ties: str = "pessimistic",
    values: Mapping[str, Sequence[Hashable | None]] | None = None,
    groups: Tensor | None = None,
) -> dict[str, dict[str, float]]:
    """Retrieval metrics for every ordered pair of modalities and every composed query.

    Args:
        embeddings: per modality ``[N, D]`` L2-normalised rows.
        present: ``bool[N, M]``, column m = m-th key of ``embeddings``.
        ids: the N item ids.
        labels: the N labels, or None.
        facts: the N ground-truth fact dicts, or None.
        fact_specs: which modalities carry each fact (None: every fact counts for every combination).
        relevance: ``auto`` (``facts`` if facts are given, else ``label`` if any label is, else ``item``),
            ``item``, ``label`` or ``facts``.
        similarity: how a composed query scores a target, ``sum`` or ``mip`` (see :func:`joint_scores`).
        joint: also evaluate composed queries.
        max_joint: the largest number of modalities in a composed query (None: all others).
        ks: the cut-offs of recall.
        ties: see :func:`rank_metrics`.
        values: per modality, a key per item of its value (``None`` where absent): where relevance is
            "the same item", targets with a value identical to the query item's own count as well
            (:meth:`omnibind.data.dataset.Dataset.value_keys` makes them).
        groups: ``long[N]`` or None: the item each row belongs to, where an item has several rows (the
            further values of a multi-valued modality, each a row of its own with the item's id, so that
            any of an item's values is relevant). A single-modality query whose items have several
            rows adds ``mrv`` (:func:`mean_rank_variance`) to its metrics.

    Returns:
        ``{"q->t": metrics, "a+b->t": metrics, ...}``, each value as from :func:`rank_metrics`. Query
        modality names are joined with ``+`` in the order of ``embeddings``. Combinations without a query
        that has a relevant target are left out.

    Example:
        >>> e = torch.eye(2)
        >>> out = evaluate_retrieval({"a": e, "b": e}, torch.ones(2, 2, dtype=torch.bool), ["x", "y"])
        >>> out["a->b"]["r@1"], out["a->b"]["n"]
        (1.0, 2)
    """
    names = list(embeddings)
    if present.shape != (len(ids), len(names)):
        raise ValueError(f"present has shape {tuple(present.shape)}, expected ({len(ids)}, {len(names)})")
    mode = _auto_mode(labels, facts) if relevance == "auto" else relevance
    _check_mode(mode, labels, facts)
    present = present.bool()
    codes_cache: dict[tuple[tuple[str, ...], str], Tensor] = {}
    results: dict[str, dict[str, float]] = {}
    for query_mods, target in query_combinations(names, joint, max_joint):
        cols = [names.index(m) for m in query_mods]
        query_idx = present[:, cols].all(dim=1).nonzero().squeeze(1)  # [nq]
        target_idx = present[:, names.index(target)].nonzero().squeeze(1)  # [nt]
        if query_idx.numel() == 0 or target_idx.numel() == 0:
            continue
        fact_names = counting_facts(query_mods, target, facts, fact_specs) if mode == "facts" else ()
        target_values = (values or {}).get(target)
        # the codes depend on the target only through the fallback to the same (or an identical) item
        key = (fact_names, target if target_values is not None else "")
        if key not in codes_cache:
            codes_cache[key] = _item_codes(mode, fact_names, ids, labels, facts, target_values)
        codes = codes_cache[key]
        target_embs, target_codes = embeddings[target][target_idx], codes[target_idx]
        ranks = []
        for start in range(0, query_idx.numel(), _CHUNK):
            rows = query_idx[start : start + _CHUNK]
            scores = joint_scores([embeddings[m][rows] for m in query_mods], target_embs, similarity)
            relevant = codes[rows][:, None] == target_codes[None, :]  # [chunk, nt]
            ranks.append(_first_relevant_ranks(scores, relevant, ties))
        all_ranks = torch.cat(ranks)
        metrics = _summarise(all_ranks, ks)
        if groups is not None and len(query_mods) == 1:
            mrv = mean_rank_variance(all_ranks, groups[query_idx])
            if not np.isnan(mrv):
                metrics["mrv"] = mrv
        if metrics["n"]:
            results["+".join(query_mods) + "->" + target] = metrics
    return results


def retrieval_matrix(
    metrics: Mapping[str, Mapping[str, float]], key: str = "r@1"
) -> tuple[list[str], list[str], np.ndarray]:
    """Arrange one metric of :func:`evaluate_retrieval` as a query x target table (for a heatmap).

    Returns:
        ``(query_names, target_names, array[len(query_names), len(target_names)])``: queries in order of
        first appearance, targets in the order of the queries (others last); combinations not evaluated
        hold NaN.
    """
    pairs = [
        (tuple(name.rsplit("->", 1)), value.get(key, float("nan")))
        for name, value in metrics.items()
        if "->" in name
    ]
    queries = list(dict.fromkeys(q for (q, _), _ in pairs))
    targets = list(dict.fromkeys(t for (_, t), _ in pairs))
    # columns in the order of the single-modality rows, so the (empty) diagonal lines up
    targets.sort(key=lambda t: queries.index(t) if t in queries else len(queries))
    table = np.full((len(queries), len(targets)), np.nan)
    for (q, t), value in pairs:
        table[queries.index(q), targets.index(t)] = value
    return queries, targets, table
