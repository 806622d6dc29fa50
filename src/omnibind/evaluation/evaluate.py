"""Evaluate a model on a prepared dataset: any-to-any retrieval, composed queries and zero-shot accuracy.

This module glues the pure metric functions (``retrieval.py``, ``zero_shot.py``) to a model: it embeds
the dataset once and scores composed queries with the model's own joint similarity (the multilinear
inner product for Symile models, the sum of cosines otherwise).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from omnibind.config import EvalConfig, ZeroShotConfig
from omnibind.data.dataset import Dataset
from omnibind.evaluation.retrieval import evaluate_retrieval, joint_scores
from omnibind.evaluation.zero_shot import class_keys, format_prompts, prototypes, zero_shot_accuracy
from omnibind.model import OmniModel
from omnibind.types import Embeddings


@torch.no_grad()
def embed_dataset(model: OmniModel, dataset: Dataset, batch_size: int = 256) -> tuple[Embeddings, Tensor]:
    """Embed every present value of ``dataset``.

    Returns:
        ``({modality: Tensor[N, D]}, present bool[N, M])``, float32 on the CPU wherever the model runs;
        rows of absent values are zero.
    """
    was_training = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {m: [] for m in model.modalities}
    try:
        for start in range(0, len(dataset), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(dataset)))
            for name, z in model.encode(dataset.batch(idx)).items():
                parts[name].append(z.float().cpu())  # metrics run on the CPU, in float32
    finally:
        model.train(was_training)
    embeddings = {m: torch.cat(v) if v else torch.zeros(0, model.dim) for m, v in parts.items()}
    return embeddings, dataset.present


@torch.no_grad()
def _with_views(
    model: OmniModel, dataset: Dataset, embeddings: Embeddings, batch_size: int
) -> dict[str, Any]:
    """The arguments of :func:`evaluate_retrieval` for ``dataset``, with every value of a multi-valued
    modality a row of its own (the item's id, label and facts; that modality present only), so that any
    of an item's values is relevant and the item's values as queries give its Mean Rank Variance.

    A multi-valued modality's values are relevant by item (its value keys are left out); the other
    modalities keep theirs, copied to the extra rows as the query item's own.
    """
    keys = dataset.value_keys()
    args: dict[str, Any] = {
        "embeddings": embeddings,
        "present": dataset.present,
        "ids": dataset.ids,
        "labels": dataset.labels,
        "facts": dataset.facts,
        "values": keys,
    }
    if not dataset.view_count:
        return args
    was_training = model.training
    model.eval()
    extra_embs: dict[str, list[Tensor]] = {m: [] for m in model.modalities}
    owners, columns = [], []
    try:
        for name in dataset.view_count:
            values, owner = dataset.views(name)
            for start in range(0, len(owner), batch_size):
                part = values[start : start + batch_size]
                z = model.encode_modality(name, part).float().cpu()  # [n, D]
                for m in model.modalities:
                    extra_embs[m].append(z if m == name else torch.zeros_like(z))
            owners.append(owner)
            columns += [dataset.modalities.index(name)] * len(owner)
    finally:
        model.train(was_training)
    owner = torch.cat(owners)  # [V]
    more = torch.zeros(len(owner), len(dataset.modalities), dtype=torch.bool)
    more[torch.arange(len(owner)), torch.tensor(columns, dtype=torch.long)] = True
    pos = owner.tolist()
    return {
        "embeddings": {m: torch.cat([embeddings[m], *extra_embs[m]]) for m in model.modalities},
        "present": torch.cat([dataset.present, more]),
        "ids": dataset.ids + [dataset.ids[i] for i in pos],
        "labels": dataset.labels + [dataset.labels[i] for i in pos],
        "facts": dataset.facts + [dataset.facts[i] for i in pos],
        "values": {m: k + [k[i] for i in pos] for m, k in keys.items() if m not in dataset.view_count},
        "groups": torch.cat([torch.arange(len(dataset)), owner]),
    }


def _relevance(cfg: EvalConfig, dataset: Dataset) -> str:
    if cfg.relevance != "auto":
        return cfg.relevance
    if any(f for f in dataset.facts or []):
        return "facts"
    if any(label is not None for label in dataset.labels or []):
        return "label"
    return "item"


def _item_values(dataset: Dataset) -> list[dict[str, Any]]:
    """Facts of each item, with ``label`` added, for zero-shot class keys."""
    out = []
    for i in range(len(dataset)):
        facts = dict((dataset.facts or [None] * len(dataset))[i] or {})
        facts.setdefault("label", dataset.labels[i] if dataset.labels else None)
        out.append(facts)
    return out


def zero_shot_metrics(
    model: OmniModel,
    dataset: Dataset,
    embeddings: Embeddings,
    task: ZeroShotConfig,
    reference: tuple[Dataset, Embeddings] | None = None,
) -> dict[str, dict[str, Any]]:
    """Zero-shot accuracy of one task for each target modality.

    Classes are the distinct values of ``task.fields`` among the evaluated items. With ``prompts`` each
    class is the mean embedding of its formatted prompts in ``task.text``; with ``prototypes`` it is the
    mean embedding of the class's items in ``reference`` (the training split) in the target modality.

    Returns:
        ``{"<task>/<target>": {"accuracy", "n"}}``.
    """
    values = _item_values(dataset)
    keys = class_keys(values, task.fields)
    classes = sorted(set(keys), key=str)
    targets = task.targets or [m for m in model.modalities if m != task.text]
    out: dict[str, dict[str, Any]] = {}
    class_embs: Tensor | None = None
    if task.method == "prompts":
        if not task.prompts:
            raise ValueError(f"zero-shot task '{task.name}' uses prompts but gives none")
        prompt_lists = format_prompts(task.prompts, task.fields, classes)
        flat = [p for plist in prompt_lists for p in plist]
        z = model.embed(flat, task.text).reshape(len(classes), len(task.prompts), -1).mean(1)
        class_embs = torch.nn.functional.normalize(z, dim=-1)  # [C, D]
    for target in targets:
        col = model.modalities.index(target)
        rows = dataset.present[:, col].nonzero().squeeze(1)
        if rows.numel() == 0:
            continue
        item_keys = [keys[i] for i in rows.tolist()]
        if task.method == "prototypes":
            if reference is None:
                raise ValueError(f"zero-shot task '{task.name}' uses prototypes but has no training split")
            ref_ds, ref_embs = reference
            ref_rows = ref_ds.present[:, col].nonzero().squeeze(1)
            ref_keys = class_keys(_item_values(ref_ds), task.fields)
            cls_list, cls_embs = prototypes(
                ref_embs[target][ref_rows], [ref_keys[i] for i in ref_rows.tolist()]
            )
            result = zero_shot_accuracy(embeddings[target][rows], item_keys, cls_embs, cls_list)
        else:
            assert class_embs is not None
            result = zero_shot_accuracy(embeddings[target][rows], item_keys, class_embs, classes)
        out[f"{task.name}/{target}"] = {"accuracy": result["accuracy"], "n": result["n"]}
    return out


def joint_fact_metrics(
    embeddings: Embeddings, present: Tensor, dataset: Dataset, similarity: str
) -> dict[str, dict[str, Any]]:
    """How often a composed query retrieves a target with the right value of a *joint* fact.

    A joint fact (``FactSpec.joint``) belongs to one modality (its owner) and can be read only from all
    its other carriers together, like the XOR bits of ``builtin:shapes``. For each such fact the query
    is the other carriers, the target the owner; the top-1 target is right when its value of the fact
    equals the query item's. A model that cannot see the fact scores the chance level (given as
    ``chance``: the share of the most common value among the targets).

    Returns:
        ``{"<fact>: <q1>+<q2>-><owner>": {"accuracy", "chance", "n"}}``.
    """
    out: dict[str, dict[str, Any]] = {}
    modalities = list(embeddings)
    for fact, spec in (dataset.fact_specs or {}).items():
        if not spec.joint or spec.owner not in embeddings:
            continue
        queries = [c for c in spec.carriers if c != spec.owner]
        if any(q not in embeddings for q in queries) or not queries:
            continue
        cols = [modalities.index(q) for q in queries]
        qrows = present[:, cols].all(dim=1).nonzero().squeeze(1)
        trows = present[:, modalities.index(spec.owner)].nonzero().squeeze(1)
        if qrows.numel() == 0 or trows.numel() == 0:
            continue
        values = [(f or {}).get(fact) for f in dataset.facts]
        scores = joint_scores(
            [embeddings[q][qrows] for q in queries], embeddings[spec.owner][trows], similarity
        )
        top = trows[scores.argmax(dim=1)]
        hits = [values[int(t)] == values[int(q)] for q, t in zip(qrows.tolist(), top.tolist(), strict=True)]
        target_values = [values[int(t)] for t in trows.tolist()]
        chance = max(target_values.count(v) for v in set(target_values)) / len(target_values)
        key = f"{fact}: {'+'.join(queries)}->{spec.owner}"
        out[key] = {"accuracy": sum(hits) / len(hits), "chance": chance, "n": len(hits)}
    return out


def xor_pick_metrics(
    model: OmniModel,
    dataset: Dataset,
    embeddings: Embeddings | None = None,
    query: tuple[str, str] = ("a", "c"),
    target: str = "b",
) -> dict[str, dict[str, Any]]:
    """The Symile paper's XOR test on ``builtin:xor`` data: pick ``target`` among all ``2**d_v`` bit vectors.

    Every possible value of the target is embedded as a candidate and scored against the query modalities
    of each item that has them (and a known ``target`` fact) with the model's joint similarity; the pick is
    right when it is the item's own ``target``. ``chance`` is ``2**-d_v``; ``bayes`` is the accuracy of
    the best possible rule on these same items, ``b = a XOR c`` (right for every XOR item and, for a copy
    item, only when ``b`` is all zeros: ``p + (1 - p) / 2**d_v`` in expectation).

    Args:
        model: a model with the modalities of ``query`` and ``target``.
        dataset: ``builtin:xor`` items (their facts hold the bit strings).
        embeddings: ``embed_dataset(model, dataset)[0]``, if already computed.

    Returns:
        ``{"a+c->b": {"accuracy", "chance", "bayes", "n"}}``; empty when the model or the items lack a
        modality of the test.
    """
    import itertools

    import numpy as np

    from omnibind.evaluation.zero_shot import candidate_accuracy

    needed = (*query, target)
    if any(m not in model.modalities or m not in dataset.modalities for m in needed):
        return {}
    cols = [dataset.modalities.index(m) for m in query]
    facts = dataset.facts
    rows = [
        i
        for i in dataset.present[:, cols].all(dim=1).nonzero().squeeze(1).tolist()
        if facts[i] and all(isinstance(facts[i].get(m), str) for m in needed)  # type: ignore[union-attr]
    ]
    if not rows:
        return {}
    bits = {m: np.array([[int(x) for x in facts[i][m]] for i in rows]) for m in needed}  # type: ignore[index]
    d_v = bits[target].shape[1]
    candidates = np.array(list(itertools.product([0.0, 1.0], repeat=d_v)), dtype=np.float32)  # [2^d, d]
    z_target = model.embed(list(candidates), target)  # [2^d, D]
    if embeddings is None:
        embeddings = embed_dataset(model, dataset)[0]
    index = torch.tensor(rows)
    truth = torch.tensor([int(facts[i][target], 2) for i in rows])  # type: ignore[index]
    queries = [embeddings[q][index] for q in query]
    result = candidate_accuracy(queries, z_target, truth, model.joint_similarity)
    bayes = float(((bits[query[0]] ^ bits[query[1]]) == bits[target]).all(axis=1).mean())
    name = f"{'+'.join(query)}->{target}"
    return {name: {"accuracy": result["accuracy"], "chance": 2.0**-d_v, "bayes": bayes, "n": result["n"]}}


def xor_pick_accuracy(
    model: OmniModel, dataset: Dataset, query: tuple[str, str] = ("a", "c"), target: str = "b"
) -> float:
    """The accuracy of :func:`xor_pick_metrics` (what ``omnibind eval`` writes as ``xor_pick``)."""
    metrics = xor_pick_metrics(model, dataset, query=query, target=target)
    if not metrics:
        needed = ", ".join((*query, target))
        raise ValueError(f"xor_pick_accuracy needs items with {needed} and their bit facts")
    return float(next(iter(metrics.values()))["accuracy"])


def evaluate(
    model: OmniModel,
    dataset: Dataset,
    cfg: EvalConfig | None = None,
    reference: Dataset | None = None,
) -> dict[str, Any]:
    """All metrics of ``model`` on ``dataset``.

    Args:
        model: a trained model.
        dataset: the prepared items to evaluate on (usually the test split).
        cfg: evaluation settings (default: the model's own ``config.eval``).
        reference: the training split, for prototype zero-shot tasks.

    Returns:
        ``{"retrieval": {"q->t": {"r@1", "r@5", "r@10", "mrr", "median_rank", "n"}, "a+b->t": ...},
        "zero_shot": {"task/target": {"accuracy", "n"}}, "joint_facts": ..., "relevance": ...,
        "joint_similarity": ..., "n_items": N}``, and for ``builtin:xor`` data ``"xor_pick"`` (see
        :func:`xor_pick_metrics`). Where relevance is "the same item", targets whose prepared value is
        identical to the query item's own count as relevant too (:meth:`Dataset.value_keys`). Every value
        of a multi-valued modality is a query and a candidate of its own; any of an item's values is
        relevant, and its queries add ``mrv`` (Mean Rank Variance) to their pair's metrics.
    """
    cfg = cfg or model.config.eval
    embeddings, present = embed_dataset(model, dataset, cfg.batch_size)
    relevance = _relevance(cfg, dataset)
    retrieval = evaluate_retrieval(
        **_with_views(model, dataset, embeddings, cfg.batch_size),
        fact_specs=dataset.fact_specs,
        relevance=relevance,
        similarity=model.joint_similarity,
        joint=cfg.joint,
    )
    ref = None
    if reference is not None:
        ref = (reference, embed_dataset(model, reference, cfg.batch_size)[0])
    zero_shot: dict[str, dict[str, Any]] = {}
    for task in cfg.zero_shot:
        zero_shot.update(zero_shot_metrics(model, dataset, embeddings, task, ref))
    metrics: dict[str, Any] = {
        "retrieval": retrieval,
        "zero_shot": zero_shot,
        "joint_facts": joint_fact_metrics(embeddings, present, dataset, model.joint_similarity),
        "relevance": relevance,
        "joint_similarity": model.joint_similarity,
        "n_items": len(dataset),
    }
    if dataset.source_name == "xor":
        metrics["xor_pick"] = xor_pick_metrics(model, dataset, embeddings)
    return metrics


def validation_metrics(model: OmniModel, dataset: Dataset, cfg: EvalConfig) -> dict[str, float]:
    """Cheap validation numbers for the training loop: mean R@1 over pairs (and over joint queries).

    Keys: ``val/mean_r@1`` (ordered pairs of single modalities), ``val/mean_joint_r@1`` (composed
    queries, if any), ``val/<q->t>/r@1`` for every combination.
    """
    embeddings, present = embed_dataset(model, dataset, cfg.batch_size)
    retrieval = evaluate_retrieval(
        **_with_views(model, dataset, embeddings, cfg.batch_size),
        fact_specs=dataset.fact_specs,
        relevance=_relevance(cfg, dataset),
        similarity=model.joint_similarity,
        joint=cfg.joint,
    )
    out: dict[str, float] = {}
    pairs = [v["r@1"] for k, v in retrieval.items() if "+" not in k]
    joint = [v["r@1"] for k, v in retrieval.items() if "+" in k]
    if pairs:
        out["val/mean_r@1"] = sum(pairs) / len(pairs)
    if joint:
        out["val/mean_joint_r@1"] = sum(joint) / len(joint)
    for key, value in retrieval.items():
        out[f"val/{key}/r@1"] = value["r@1"]
    return out
