"""Which modalities a classifier uses: permutation, ablation, subset Shapley, item categories, AGM strength.

All scores embed the dataset once and re-run only the fusion head (see ``evaluation/robustness.py``), so
"removing" a modality always goes through the presence mask: the head masks or skips it exactly as it does
for an item that never had it. Definitions (``acc`` is accuracy over all items of the dataset):

- **permutation** ``PI_m = acc - mean_k acc(m's embeddings shuffled across the items that have m)``: the
  head still sees ``m``, with values that belong to other items, so the marginal of ``m`` is kept. It
  measures *reliance*, not necessity: two redundant modalities can each score near 0 (the other one
  covers), and a modality the head uses to *contradict* the others can score high.
- **ablation** ``AB_m = acc - acc(m absent for every item)``: what losing ``m`` costs. Redundant modalities
  also score near 0 here; a head never trained without ``m`` answers off its training distribution.
- **shapley** over modalities with ``v(S) = acc`` when only ``S`` is present (each item keeps ``S`` ∩ its
  own modalities): ``phi_m`` averages ``v(S + m) - v(S)`` over the orders in which modalities could arrive;
  the values add up to ``v(all) - v(empty)``. Redundant modalities share the credit; a combination needed
  as a whole splits its credit between its members. Exact up to :data:`EXACT_UP_TO` modalities, Monte-Carlo
  above (``omnibind.evaluation.shapley``).
- **categories** per item, in the spirit of the Modality Importance Score (MIS): which subsets of the item's
  modalities *solve* it (see :func:`solved`) decide whether it needs one modality, any, a combination,
  or none (:func:`categorise` has the exact rules).
- **competition strength** (AGM): how much of a separately trained unimodal model's output the fused
  representation fails to carry linearly (:func:`competition_strength`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from omnibind.data.dataset import Dataset
from omnibind.errors import OmnibindError
from omnibind.evaluation.classification import embed_for_classifier
from omnibind.evaluation.robustness import EmbeddedSet, embed_dataset, random_order, without
from omnibind.evaluation.shapley import shapley_values
from omnibind.fusion.classifier import Classifier

EXACT_UP_TO = 10  # modalities; exact Shapley and the categories cost 2^M - 1 head passes
MC_SAMPLES = 64  # random orders (each with its reverse) for Monte-Carlo Shapley above EXACT_UP_TO
CONFIDENCE = 2 / 3  # a subset solves an item when it gives the true class >= 2/3 (twice all others together)
NEEDS = "needs "  # category prefix: "needs image"
CATEGORIES = ("any", "combination", "mixed", "none")


def _accuracy(es: EmbeddedSet, present: Tensor | None = None, embeddings: Any = None) -> float:
    acc = es.metrics(present, embeddings)["accuracy"]
    return 0.0 if acc is None else float(acc)


def permutation_importance(es: EmbeddedSet, permutations: int = 5, seed: int = 0) -> dict[str, float]:
    """``acc - mean acc`` with each modality's embeddings shuffled ``permutations`` times across its items.

    Only items that have ``m`` exchange ``m``'s embeddings; presence is unchanged. A modality that fewer
    than two items have scores 0.

    Raises:
        ValueError: ``permutations`` < 1.
    """
    if permutations < 1:
        raise ValueError(f"permutations must be at least 1, got {permutations}")
    base = _accuracy(es)
    out = {}
    for j, m in enumerate(es.model.modalities):
        having = es.present[:, j].nonzero().squeeze(1)  # [n_m]
        if len(having) < 2:
            out[m] = 0.0
            continue
        accs = []
        for k in range(permutations):
            shuffled = es.embeddings[m].clone()
            shuffled[having] = es.embeddings[m][having[random_order(len(having), seed, j, k)]]
            accs.append(_accuracy(es, embeddings={**es.embeddings, m: shuffled}))
        out[m] = base - sum(accs) / len(accs)
    return out


def ablation_importance(es: EmbeddedSet) -> dict[str, float]:
    """``acc - acc(m absent for every item)`` for each modality ``m`` (through the presence mask)."""
    base = _accuracy(es)
    every = torch.arange(es.present.shape[0])
    return {m: base - _accuracy(es, without(es.present, j, every)) for j, m in enumerate(es.model.modalities)}


def _only(es: EmbeddedSet, subset: frozenset[str]) -> Tensor:
    keep = torch.tensor([m in subset for m in es.model.modalities])  # [M]
    return es.present & keep


def shapley_importance(
    es: EmbeddedSet, samples: int | None = None, seed: int = 0
) -> tuple[dict[str, float], float]:
    """Shapley value of each modality for ``v(S)`` = accuracy with only ``S`` present.

    Args:
        es: the embedded dataset.
        samples: random orders of the Monte-Carlo estimate; ``None``: exact up to :data:`EXACT_UP_TO`
            modalities, else :data:`MC_SAMPLES` orders.
        seed: random source of the orders (Monte-Carlo only).

    Returns:
        ``({modality: phi}, v(empty))``: the values add up to ``acc - v(empty)``, where ``v(empty)`` is the
        accuracy of the head's answer with nothing present.
    """
    modalities = es.model.modalities
    if samples is None and len(modalities) > EXACT_UP_TO:
        samples = MC_SAMPLES
    empty = _accuracy(es, _only(es, frozenset()))
    phi = shapley_values(
        lambda s: _accuracy(es, _only(es, s)),
        modalities,
        samples=samples,
        generator=torch.Generator().manual_seed(seed),
        empty=empty,
    )
    return {m: float(v) for m, v in phi.items()}, empty


def solved(logits: Tensor, targets: Tensor, confidence: float = CONFIDENCE) -> Tensor:
    """``bool[N]``: whether each prediction gets the item right *with confidence*.

    Single-label: the top class is the target and its softmax probability is at least ``confidence``.
    Multi-label: every class's sigmoid is on the right side of 0.5 and at least ``confidence`` away from
    the wrong side (``p >= confidence`` for the item's classes, ``p <= 1 - confidence`` for the others).

    Why not plain correctness: a subset that knows nothing still hits the true class by chance (half the
    items of a two-class task), and a subset that knows half the answer (one bit of two) hits it half the
    time; both would look "right". With the default 2/3 (the true class at least twice as likely as all
    others together) a chance guess (1/C) and a two-way tie (1/2) are not solved.
    """
    if targets.ndim == 2:
        p = logits.sigmoid()
        ok = torch.where(targets > 0, p >= confidence, p <= 1 - confidence) & ((p > 0.5) == (targets > 0))
        return ok.all(dim=1)
    p = logits.softmax(dim=1)
    top = p.argmax(dim=1) == targets
    return top & (p.gather(1, targets[:, None]).squeeze(1) >= confidence)


def subset_solved(es: EmbeddedSet, confidence: float = CONFIDENCE) -> Tensor:
    """``bool[N, 2^M]``: column ``s`` says whether the subset with bit mask ``s`` solves each item.

    Bit ``j`` of ``s`` is ``modalities[j]``; column 0 (the empty set) is the head's empty-state answer.
    A subset is scored with ``present & S``, so for an item it means ``S`` ∩ the item's own modalities.
    """
    m = len(es.model.modalities)
    bits = torch.tensor([1 << j for j in range(m)])  # [M]
    cols = []
    for s in range(1 << m):
        keep = (s & bits) > 0  # [M]
        cols.append(solved(es.logits(es.present & keep), es.targets, confidence))
    return torch.stack(cols, dim=1)


def categorise(right: Tensor, present: Tensor, modalities: Sequence[str]) -> list[str]:
    """Each item's category from which subsets of its own modalities solve it.

    Inputs:
        right: ``bool[N, 2^M]``, column ``s`` = the subset with bit mask ``s`` solves the item
            (:func:`subset_solved`); only subsets of the item's own modalities (``P``) are read.
        present: ``bool[N, M]``.

    Returns:
        per item, the first that applies, with ``R`` = the non-empty subsets of ``P`` that solve it:

        - ``"none"``: ``R`` is empty (no subset, not even all of ``P``, solves it);
        - ``"combination"``: no single modality solves it, some larger subset does;
        - ``"needs m"``: ``m`` alone solves it and every subset in ``R`` contains ``m`` (the item can
          only be solved with ``m``; an item that has only ``m`` and is solved lands here too);
        - ``"any"``: every modality of ``P`` solves it alone;
        - ``"mixed"``: the rest (several, but not all, modalities solve it alone; or one does and a
          subset without it does too).
    """
    n, m = present.shape
    masks = torch.arange(1 << m)  # [K]
    bits = torch.tensor([1 << j for j in range(m)])  # [M]
    member = (masks[:, None] & bits[None, :]) > 0  # [K, M]: modality j in subset s
    p_mask = (present.long() * bits).sum(dim=1)  # [N] the item's own set as a bit mask
    inside = (masks[None, :] & ~p_mask[:, None]) == 0  # [N, K]: subset s within P
    r = right & inside
    r[:, 0] = False  # the empty set never counts
    any_right = r.any(dim=1)  # [N]
    singles = r[:, bits]  # [N, M]: modality j alone solves it
    # needed[i, j]: every solving subset contains j
    needed = ~(r[:, :, None] & ~member[None, :, :]).any(dim=1)  # [N, M]
    out = []
    for i in range(n):
        if not any_right[i]:
            out.append("none")
        elif not singles[i].any():
            out.append("combination")
        elif (singles[i] & needed[i]).any():
            out.append(NEEDS + modalities[int((singles[i] & needed[i]).nonzero()[0])])
        elif bool((singles[i] == present[i]).all()):
            out.append("any")
        else:
            out.append("mixed")
    return out


def item_categories(es: EmbeddedSet, confidence: float = CONFIDENCE) -> list[str]:
    """:func:`categorise` of every item from the head's predictions under each subset of its modalities.

    Raises:
        OmnibindError: more than :data:`EXACT_UP_TO` modalities (2^M head passes).
        ValueError: ``confidence`` outside [0, 1).
    """
    if not 0.0 <= confidence < 1.0:
        raise ValueError(f"confidence must be in [0, 1), got {confidence}")
    if len(es.model.modalities) > EXACT_UP_TO:
        raise OmnibindError(
            f"per-item categories need all 2^M subsets; {len(es.model.modalities)} modalities is more "
            f"than {EXACT_UP_TO}"
        )
    return categorise(subset_solved(es, confidence), es.present, es.model.modalities)


def importance_report(
    model: Classifier,
    dataset: Dataset,
    seed: int = 0,
    permutations: int = 5,
    shapley_samples: int | None = None,
    batch_size: int = 256,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Every modality-importance score of a classifier on one dataset (competition strength aside).

    Args:
        model: the classifier.
        dataset: labelled items (usually the test split).
        seed: fixes the permutations and the Monte-Carlo orders.
        permutations: shuffles per modality for permutation importance.
        shapley_samples: Monte-Carlo orders for Shapley (``None``: exact up to :data:`EXACT_UP_TO`).
        batch_size: items per encoding and head batch.
        confidence: the true-class probability a subset needs to solve an item (categories only).

    Returns:
        ``{"accuracy", "empty_accuracy", "permutation": {m: float}, "ablation": {m: float}, "shapley":
        {m: float}, "categories": {"counts": {category: int}, "shares": {category: float}}, "items":
        [{"id", "category"}], "confidence"}``; categories are ``"needs <m>"`` for every modality, then
        ``any``, ``combination``, ``mixed``, ``none`` (all listed, zero or not). ``categories`` and
        ``items`` are ``None`` above :data:`EXACT_UP_TO` modalities.
    """
    es = embed_dataset(model, dataset, batch_size)
    shapley, empty = shapley_importance(es, shapley_samples, seed)
    out: dict[str, Any] = {
        "accuracy": _accuracy(es),
        "empty_accuracy": empty,
        "permutation": permutation_importance(es, permutations, seed),
        "ablation": ablation_importance(es),
        "shapley": shapley,
        "confidence": float(confidence),
        "categories": None,
        "items": None,
    }
    if len(model.modalities) <= EXACT_UP_TO:
        cats = item_categories(es, confidence)
        names = [NEEDS + m for m in model.modalities] + list(CATEGORIES)
        counts = {c: sum(1 for x in cats if x == c) for c in names}
        total = max(1, len(cats))
        out["categories"] = {"counts": counts, "shares": {c: k / total for c, k in counts.items()}}
        out["items"] = [{"id": i, "category": c} for i, c in zip(es.ids, cats, strict=True)]
    return out


def fused_features(es: EmbeddedSet, present: Tensor | None = None) -> Tensor:
    """``[N, F]``: the head's fused representation, the input of the linear layer that makes the logits.

    The layer is the head's last ``nn.Linear`` with C outputs (late: the MLP's last layer; attention and
    experts: the classifier on the pooled token; sequential: the decoder, read at the last state). The
    captured output is checked against the logits, so a head built otherwise raises rather than
    returning some other layer's input.

    Raises:
        OmnibindError: no such layer, or its output is not the logits.
    """
    head = es.model.head
    c = len(es.model.classes)
    layers = [mod for mod in head.modules() if isinstance(mod, nn.Linear) and mod.out_features == c]
    if not layers:
        raise OmnibindError(f"{type(head).__name__}: no linear layer with {c} outputs makes the logits")
    captured: list[tuple[Tensor, Tensor]] = []
    hook = layers[-1].register_forward_hook(lambda mod, args, out: captured.append((args[0], out)))
    try:
        logits = es.logits(present)
    finally:
        hook.remove()
    feats, outs = [], []
    for x, y in captured:
        if x.ndim == 3:  # sequential: [B, steps, S]; the logits are the last step's
            x, y = x[:, -1], y[:, -1]
        feats.append(x)
        outs.append(y)
    if not outs or not torch.allclose(torch.cat(outs), logits, atol=1e-5):
        raise OmnibindError(f"{type(head).__name__}: cannot locate the layer that makes the logits")
    return torch.cat(feats)


def competition_strength_from(
    fused_fit: Tensor, unimodal_fit: Tensor, fused_test: Tensor, unimodal_test: Tensor, ridge: float = 120.0
) -> float:
    """AGM's competition strength of one modality from features and unimodal outputs.

    A ridge regression (penalty ``ridge``, intercept not penalised) from the fused features to the unimodal
    model's outputs is fitted on the fit items; on the test items, with ``E`` the residual ``[N, C]`` and
    ``B`` the scatter matrix of the unimodal outputs (``N`` times their covariance)::

        strength = trace(B^+ E^T E) / C

    0: the fused representation carries (linearly) everything the unimodal model outputs; about 1: nothing
    beyond the mean, i.e. the modality was suppressed by the others during joint training.

    Inputs:
        fused_fit: ``[N1, F]``; unimodal_fit: ``[N1, C]``; fused_test: ``[N2, F]``;
            unimodal_test: ``[N2, C]``.

    References:
        Li et al., "Boosting Multi-modal Model Performance with Adaptive Gradient Modulation", ICCV 2023.
    """
    x, y = fused_fit.double(), unimodal_fit.double()
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    eye = torch.eye(x.shape[1], dtype=torch.float64)
    w = torch.linalg.solve(xc.T @ xc + ridge * eye, xc.T @ yc)  # [F, C]
    residual = (fused_test.double() - mx) @ w + my - unimodal_test.double()  # [N2, C]
    u = unimodal_test.double() - unimodal_test.double().mean(0)
    scatter = u.T @ u  # [C, C]
    return float(torch.trace(torch.linalg.pinv(scatter, hermitian=True) @ residual.T @ residual)) / y.shape[1]


def _unimodal_outputs(model: Classifier, dataset: Dataset, batch_size: int) -> Tensor:
    """``[N, C]`` logits of a one-modality classifier on the items of ``dataset`` (which all have it)."""
    embeddings = embed_for_classifier(model, dataset, batch_size)
    es = EmbeddedSet(model, embeddings, dataset.present, torch.zeros(0), list(dataset.ids), batch_size)
    return es.logits()


def _having(dataset: Dataset, modality: str) -> Dataset:
    """The items of ``dataset`` that have ``modality``."""
    return dataset.subset(dataset.present[:, dataset.modalities.index(modality)].nonzero().squeeze(1))


def _view(sub: Dataset, modality: str) -> Dataset:
    """``sub`` (whose items all have ``modality``) as a one-modality dataset (no copy of values)."""
    j = sub.modalities.index(modality)
    return Dataset(
        sub.records,
        (modality,),
        {modality: sub.values[modality]},
        sub.present[:, j : j + 1],
        {modality: sub.row_of[modality]},
        sub.fact_specs,
        sub.source_name,
    )


def competition_strength(
    model: Classifier,
    unimodal: Mapping[str, Classifier],
    fit_set: Dataset,
    test_set: Dataset,
    ridge: float = 120.0,
    batch_size: int = 256,
) -> dict[str, float]:
    """AGM's competition strength of each modality that has a unimodal model.

    Args:
        model: the multimodal classifier.
        unimodal: ``{modality: classifier trained on that modality alone}`` (same data and kind options,
            so the prepared values mean the same to it).
        fit_set: where the ridge regressions are fitted (AGM's "dep" split; use val).
        test_set: where the strength is measured.
        ridge: the ridge penalty (AGM uses 120).
        batch_size: items per batch.

    Returns:
        ``{modality: strength}`` (see :func:`competition_strength_from`), on the items that have the
        modality; the fused features use each item's own presence.

    Raises:
        OmnibindError: a unimodal model that is not a one-modality model of that modality, or a modality
            the multimodal model lacks.
    """
    out = {}
    for m, uni in unimodal.items():
        if uni.modalities != (m,):
            raise OmnibindError(
                f"competition strength: the unimodal model for '{m}' must have exactly that modality, "
                f"it has {', '.join(uni.modalities)}"
            )
        if m not in model.modalities:
            raise OmnibindError(f"competition strength: the model has no modality '{m}'")
        parts = []
        for ds in (fit_set, test_set):
            sub = _having(ds, m)
            fused = fused_features(embed_dataset(model, sub, batch_size))
            parts.append((fused, _unimodal_outputs(uni, _view(sub, m), batch_size)))
        (f_fit, u_fit), (f_test, u_test) = parts
        out[m] = competition_strength_from(f_fit, u_fit, f_test, u_test, ridge)
    return out
