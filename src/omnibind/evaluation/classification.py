"""Classification metrics: accuracy, macro-F1 and AUROC, overall and for every subset of modalities.

The pure functions (:func:`accuracy`, :func:`macro_f1`, :func:`auroc`, :func:`classification_metrics`)
take logits and targets. :func:`evaluate_classifier` embeds a dataset once and scores the classifier's
head with the items' own presence, then with every non-empty subset ``S`` of modalities: the head sees
only ``S`` (the rest masked out via ``present``), on the items that have every modality of ``S``. A
multi-task classifier is scored per task, and its ``overall`` and ``subsets`` are the means over tasks.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import torch
from torch import Tensor

from omnibind.data.dataset import Dataset
from omnibind.fusion.classifier import Classifier
from omnibind.fusion.labels import LabelTask, encode_targets, split_targets
from omnibind.types import Embeddings


def accuracy(logits: Tensor, targets: Tensor) -> float:
    """Share of items whose top class is the target (multi-label: whose thresholded set is exact)."""
    if targets.ndim == 2:
        return float(((logits > 0).float() == targets).all(dim=1).float().mean())
    return float((logits.argmax(dim=1) == targets).float().mean())


def macro_f1(pred: Tensor, true: Tensor, num_classes: int) -> float:
    """Mean F1 over the classes that occur in ``true`` or ``pred`` (class indices ``long[N]``)."""
    scores = []
    for c in range(num_classes):
        tp = int(((pred == c) & (true == c)).sum())
        fp = int(((pred == c) & (true != c)).sum())
        fn = int(((pred != c) & (true == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def _binary_auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties."""
    from scipy.stats import rankdata

    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc(scores: Tensor, positive: Tensor) -> float | None:
    """Macro one-vs-rest AUROC over the classes with both positive and negative items (``None`` if none).

    Inputs:
        scores: ``[N, C]`` class scores (logits or probabilities: only the order matters).
        positive: ``bool[N, C]``, which class(es) each item has.
    """
    s, pos = scores.detach().cpu().numpy(), positive.cpu().numpy().astype(bool)
    values = [_binary_auroc(s[:, c], pos[:, c]) for c in range(s.shape[1]) if 0 < pos[:, c].sum() < len(pos)]
    return float(np.mean(values)) if values else None


def classification_metrics(logits: Tensor, targets: Tensor) -> dict[str, Any]:
    """``accuracy``, ``macro_f1``, ``auroc`` (``None`` when undefined) and ``n`` for one set of predictions.

    Inputs:
        logits: ``[N, C]``; targets: ``long[N]`` class indices, or multi-hot ``float[N, C]``.
    """
    n, c = logits.shape
    if n == 0:
        return {"accuracy": None, "macro_f1": None, "auroc": None, "n": 0}
    if targets.ndim == 2:  # multi-label: F1 per class of the thresholded sigmoid
        pred = logits > 0
        true = targets.bool()
        f1 = [
            2 * int((pred[:, k] & true[:, k]).sum()) / max(1, int(pred[:, k].sum() + true[:, k].sum()))
            for k in range(c)
            if int(true[:, k].sum() + pred[:, k].sum())
        ]
        return {
            "accuracy": accuracy(logits, targets),
            "macro_f1": float(np.mean(f1)) if f1 else 0.0,
            "auroc": auroc(logits, true),
            "n": n,
        }
    positive = torch.nn.functional.one_hot(targets, c).bool()
    return {
        "accuracy": accuracy(logits, targets),
        "macro_f1": macro_f1(logits.argmax(dim=1), targets, c),
        "auroc": auroc(logits.softmax(dim=1), positive),
        "n": n,
    }


def subsets(modalities: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities``, smallest first, in modality order within each size."""
    return [s for k in range(1, len(modalities) + 1) for s in combinations(modalities, k)]


@torch.no_grad()
def embed_for_classifier(model: Classifier, dataset: Dataset, batch_size: int = 256) -> Embeddings:
    """``{modality: [N, D]}`` of every item (absent rows zero), with the model in eval mode."""
    was_training = model.training
    model.eval()
    parts: dict[str, list[Tensor]] = {m: [] for m in model.modalities}
    try:
        for batch in dataset.iter_batches(batch_size):
            for name, z in model.embed(batch).items():
                parts[name].append(z)
    finally:
        model.train(was_training)
    return {m: torch.cat(v) if v else torch.zeros(0, model.config.model.dim) for m, v in parts.items()}


@torch.no_grad()
def evaluate_classifier(
    model: Classifier, dataset: Dataset, batch_size: int = 256, by_subset: bool = True
) -> dict[str, Any]:
    """Score a classifier on a dataset.

    Args:
        model: the classifier.
        dataset: labelled items (the label field of ``model.config.task``).
        batch_size: items per encoding batch.
        by_subset: also score every non-empty subset of modalities.

    Returns:
        ``{"overall": metrics, "subsets": {"image": metrics, "image+audio": ..., ...}, "classes": [...]}``
        where ``metrics`` is :func:`classification_metrics`; a subset's ``n`` counts the items that have
        all of its modalities (``accuracy`` is ``None`` when there are none). With several tasks:
        ``{"overall": mean, "subsets": {...: mean}, "tasks": {label: {"overall", "subsets", "classes"}}}``
        where ``mean`` is :func:`mean_over_tasks` of the tasks' metrics.

    Raises:
        DataError: an item's class was not seen in training (see ``omnibind.fusion.labels``).
    """
    targets = encode_targets(model.tasks, dataset)
    embeddings = embed_for_classifier(model, dataset, batch_size)
    groups: dict[str, tuple[Tensor, Tensor]] = {"overall": (dataset.present, torch.arange(len(dataset)))}
    if by_subset:
        for subset in subsets(model.modalities):
            keep = torch.tensor([m in subset for m in model.modalities])
            rows = (dataset.present | ~keep).all(dim=1).nonzero().squeeze(1)  # items with all of S
            groups["+".join(subset)] = (dataset.present.index_select(0, rows) & keep, rows)
    was_training = model.training
    model.eval()
    try:
        scores = {}  # group -> task -> metrics
        for group, (present, rows) in groups.items():
            z = {m: e.index_select(0, rows) for m, e in embeddings.items()}
            logits = _logits(model, z, present, batch_size)
            scores[group] = _per_task(model.tasks, logits, targets.index_select(0, rows))
    finally:
        model.train(was_training)
    return _layout(model.tasks, scores, by_subset)


def _per_task(tasks: list[LabelTask], logits: Tensor, targets: Tensor) -> dict[str, dict[str, Any]]:
    truth = split_targets(targets, tasks)
    return {t.name: classification_metrics(logits[:, t.columns], truth[t.name]) for t in tasks}


def _layout(tasks: list[LabelTask], scores: dict[str, dict[str, Any]], by_subset: bool) -> dict[str, Any]:
    """The single-task layout (unchanged since before multi-task), or means plus a ``tasks`` section."""
    groups = [g for g in scores if g != "overall"]
    if len(tasks) == 1:
        name = tasks[0].name
        out: dict[str, Any] = {"overall": scores["overall"][name], "classes": list(tasks[0].classes)}
        if by_subset:
            out["subsets"] = {g: scores[g][name] for g in groups}
        return out
    out = {"overall": mean_over_tasks(list(scores["overall"].values()))}
    if by_subset:
        out["subsets"] = {g: mean_over_tasks(list(scores[g].values())) for g in groups}
    out["tasks"] = {}
    for t in tasks:
        mine: dict[str, Any] = {"overall": scores["overall"][t.name], "classes": list(t.classes)}
        if by_subset:
            mine["subsets"] = {g: scores[g][t.name] for g in groups}
        out["tasks"][t.name] = mine
    return out


def mean_over_tasks(metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of each metric over tasks (over the tasks where it is defined; ``None`` where none is).

    ``n`` is the number of items, the same for every task.
    """
    out: dict[str, Any] = {}
    for key in ("accuracy", "macro_f1", "auroc"):
        values = [m[key] for m in metrics if m[key] is not None]
        out[key] = float(np.mean(values)) if values else None
    out["n"] = metrics[0]["n"]
    return out


def _logits(model: Classifier, embeddings: Embeddings, present: Tensor, batch_size: int) -> Tensor:
    n = present.shape[0]
    chunks = [
        model.head(
            {m: e[i : i + batch_size] for m, e in embeddings.items()}, present[i : i + batch_size]
        ).logits
        for i in range(0, n, batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.zeros(0, model.head.num_classes)
