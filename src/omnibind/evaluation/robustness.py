"""Robustness to missing modalities: MCAR curves and the MultiModN MNAR test, through the presence mask.

Every score here embeds the dataset once (:func:`embed_dataset`) and re-runs only the fusion head with an
altered presence mask, so "missing" is always what the head sees at deployment when a modality is absent
(masked out or skipped), never a zero-filled input:

- :func:`mcar_curves`: for each modality ``m`` and rate ``r``, ``m`` goes missing for a random share ``r`` of
  the items that have it (missing completely at random). The dropped sets are nested (one random order per
  modality, the first ``round(r * n_m)`` items of it), so a curve moves only because of the rate.
- :func:`mnar_test`: the MultiModN test. A model trained with a modality missing mostly for one class (see
  ``data.missing`` in the config) is scored with no missingness ("clean") and with the modality missing for
  the same share of the items of *another* class ("flipped"). A model that learned "missing means class c"
  loses accuracy on the flipped items; one that treats missing as "no information" does not.
- :func:`robustness_report`: both, plus every subset of modalities.

An item left with nothing present (its only modality dropped) stays in the score: every head then answers
from its learned empty state (late fusion: the MLP of all-zero inputs; attention: the CLS token alone;
sequential: the initial state; experts: the read-out bias), a constant guess, as a deployed model would have
to. The alternative, leaving such items out, would make the score at a high rate depend on fewer items.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from omnibind.config import MissingConfig, RunConfig
from omnibind.data.dataset import Dataset
from omnibind.errors import OmnibindError
from omnibind.evaluation.classification import (
    classification_metrics,
    embed_for_classifier,
    evaluate_classifier,
)
from omnibind.fusion.classifier import Classifier
from omnibind.fusion.labels import encode_labels, item_labels
from omnibind.types import Embeddings

RATES: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(11))  # 0.0, 0.1, ..., 1.0


@dataclass
class EmbeddedSet:
    """A dataset embedded once, so that a score under another presence mask only re-runs the head.

    Attributes:
        model: the classifier (put in eval mode while scoring).
        embeddings: ``{modality: [N, D]}`` (absent rows zero; the head never reads them).
        present: ``bool[N, M]``, the items' own presence.
        targets: ``long[N]`` class indices, or multi-hot ``float[N, C]``.
        ids: the item ids.
        batch_size: items per head call.
    """

    model: Classifier
    embeddings: Embeddings
    present: Tensor
    targets: Tensor
    ids: list[str]
    batch_size: int = 256

    def column(self, modality: str) -> int:
        """Column of ``modality`` in ``present``.

        Raises:
            OmnibindError: the model has no such modality.
        """
        if modality not in self.model.modalities:
            raise OmnibindError(
                f"unknown modality '{modality}'; the model has {', '.join(self.model.modalities)}"
            )
        return self.model.modalities.index(modality)

    @torch.no_grad()
    def logits(self, present: Tensor | None = None, embeddings: Embeddings | None = None) -> Tensor:
        """``[N, C]`` head logits under ``present`` (default: the items' own) and ``embeddings``."""
        present = self.present if present is None else present
        embeddings = self.embeddings if embeddings is None else embeddings
        was_training = self.model.training
        self.model.eval()
        try:
            chunks = [
                self.model.head(
                    {m: e[i : i + self.batch_size] for m, e in embeddings.items()},
                    present[i : i + self.batch_size],
                ).logits
                for i in range(0, present.shape[0], self.batch_size)
            ]
        finally:
            self.model.train(was_training)
        return torch.cat(chunks) if chunks else torch.zeros(0, len(self.model.classes))

    def metrics(self, present: Tensor | None = None, embeddings: Embeddings | None = None) -> dict[str, Any]:
        """:func:`classification_metrics` of the head under ``present`` and ``embeddings``."""
        return classification_metrics(self.logits(present, embeddings), self.targets)

    def class_index(self, label: str) -> int:
        """Index of class ``label`` in the model's class list.

        Raises:
            OmnibindError: not a class of the model (the message lists them).
        """
        classes = self.model.classes
        if str(label) not in classes:
            raise OmnibindError(f"'{label}' is not a class of this model; classes: {', '.join(classes)}")
        return classes.index(str(label))


def embed_dataset(model: Classifier, dataset: Dataset, batch_size: int = 256) -> EmbeddedSet:
    """Embed ``dataset`` once and read its targets (the label of ``model.config.task``).

    Raises:
        DataError: an item without a label, or with a class the model never saw.
    """
    task = model.config.task
    assert task is not None  # a Classifier always has a task
    targets = encode_labels(item_labels(dataset, task.label, task.multilabel), model.classes, dataset)
    embeddings = embed_for_classifier(model, dataset, batch_size)
    return EmbeddedSet(model, embeddings, dataset.present.clone(), targets, list(dataset.ids), batch_size)


def without(present: Tensor, column: int, rows: Tensor) -> Tensor:
    """A copy of ``present`` (``bool[N, M]``) with column ``column`` set absent at ``rows`` (``long[k]``)."""
    out = present.clone()
    out[rows, column] = False
    return out


def random_order(n: int, seed: int, *stream: int) -> Tensor:
    """A random permutation ``long[n]`` of ``range(n)``, fixed by ``seed`` and the ``stream`` numbers."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, *stream]))
    return torch.as_tensor(rng.permutation(n), dtype=torch.long)


def _floats(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if v is None or k == "n" else float(v)) for k, v in metrics.items()}


def mcar_curves(
    model: Classifier,
    dataset: Dataset,
    rates: Sequence[float] = RATES,
    seed: int = 0,
    batch_size: int = 256,
    embedded: EmbeddedSet | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Scores against the rate at which each modality goes missing completely at random.

    Args:
        model: the classifier.
        dataset: labelled items (usually the test split).
        rates: shares in [0, 1] of the items that have ``m`` and lose it.
        seed: fixes which items lose a modality (one random order per modality; rate ``r`` drops the first
            ``round(r * n_m)`` items of it, so the dropped sets grow with ``r``).
        batch_size: items per encoding and head batch.
        embedded: ``dataset`` already embedded by :func:`embed_dataset` (saves the encoders a pass).

    Returns:
        ``{modality: [{"rate", "accuracy", "macro_f1", "auroc", "n", "dropped"}, ...]}`` in ``rates``
        order; ``n`` counts every item (items keep their other modalities; one left with nothing gets the
        head's empty-state answer, see the module docs) and ``dropped`` those that lost the modality.

    Raises:
        ValueError: a rate outside [0, 1].
    """
    bad = [r for r in rates if not 0.0 <= r <= 1.0]
    if bad:
        raise ValueError(f"MCAR rates must be in [0, 1], got {bad}")
    es = embedded or embed_dataset(model, dataset, batch_size)
    curves: dict[str, list[dict[str, Any]]] = {}
    for j, m in enumerate(model.modalities):
        having = es.present[:, j].nonzero().squeeze(1)  # [n_m] items that have m
        order = having[random_order(len(having), seed, j)]
        curve = []
        for r in rates:
            k = int(round(r * len(having)))
            scores = _floats(es.metrics(without(es.present, j, order[:k])))
            curve.append({"rate": float(r), **scores, "dropped": k})
        curves[m] = curve
    return curves


def mnar_test(
    model: Classifier,
    dataset: Dataset,
    modality: str,
    rate: float,
    flipped_label: str,
    seed: int = 0,
    batch_size: int = 256,
    embedded: EmbeddedSet | None = None,
) -> dict[str, Any]:
    """The MultiModN MNAR test: clean scores against scores with ``modality`` missing for another class.

    Args:
        model: a classifier, typically trained with ``modality`` missing mostly for one class
            (``data.missing``).
        dataset: the test items, with their own presence ("clean": no missingness added).
        modality: the modality that goes missing.
        rate: share of the items of ``flipped_label`` that have ``modality`` and lose it.
        flipped_label: the class whose items lose it at test time (another class than in training).
        seed: fixes which items lose it.
        batch_size: items per encoding and head batch.
        embedded: ``dataset`` already embedded by :func:`embed_dataset`.

    Returns:
        ``{"modality", "rate", "flipped_label", "clean": metrics, "flipped": metrics, "drop": clean accuracy
        - flipped accuracy, "dropped": items that lost the modality, "affected": {"clean_accuracy",
        "flipped_accuracy"} on those items only}``; metrics as :func:`classification_metrics`.

    Raises:
        OmnibindError: ``modality`` or ``flipped_label`` is not the model's.
        ValueError: ``rate`` outside [0, 1].

    References:
        Swamy et al., "MultiModN", NeurIPS 2023 (MNAR experiment: missingness moved to the other label).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    es = embedded or embed_dataset(model, dataset, batch_size)
    j = es.column(modality)
    c = es.class_index(flipped_label)
    of_class = es.targets[:, c] > 0 if es.targets.ndim == 2 else es.targets == c  # [N]
    candidates = (of_class & es.present[:, j]).nonzero().squeeze(1)
    rows = candidates[random_order(len(candidates), seed, j, c)][: int(round(rate * len(candidates)))]
    clean_logits = es.logits()
    flipped = without(es.present, j, rows)
    flipped_logits = es.logits(flipped)
    clean = _floats(classification_metrics(clean_logits, es.targets))
    moved = _floats(classification_metrics(flipped_logits, es.targets))
    affected = {
        "clean_accuracy": classification_metrics(clean_logits[rows], es.targets[rows])["accuracy"],
        "flipped_accuracy": classification_metrics(flipped_logits[rows], es.targets[rows])["accuracy"],
    }
    drop = None if clean["accuracy"] is None else clean["accuracy"] - moved["accuracy"]
    return {
        "modality": modality,
        "rate": float(rate),
        "flipped_label": str(flipped_label),
        "clean": clean,
        "flipped": moved,
        "drop": drop,
        "dropped": len(rows),
        "affected": {k: None if v is None else float(v) for k, v in affected.items()},
    }


def mnar_setting(config: RunConfig) -> MissingConfig | None:
    """The training MNAR entry of ``config.data.missing`` that :func:`robustness_report` tests, if any.

    That is the first entry with a ``value`` that applies to ``train`` and whose ``field`` is the task's
    label (so its value is a class of the model).
    """
    if config.task is None:
        return None
    label = "+".join(p.strip() for p in config.task.label.split("+"))
    for entry in config.data.missing:
        field = "+".join(p.strip() for p in entry.field.split("+"))
        if entry.value and "train" in entry.splits and field == label:
            return entry
    return None


def flipped_class(classes: Sequence[str], trained: str) -> str:
    """The class that the flipped test moves missingness to: the one after ``trained`` in class order
    (cyclically), a fixed and documented choice.

    Raises:
        OmnibindError: ``trained`` is not in ``classes``, or there is no other class.
    """
    if trained not in classes or len(classes) < 2:
        raise OmnibindError(
            f"MNAR: the training class '{trained}' must be one of at least two classes ({', '.join(classes)})"
        )
    return classes[(list(classes).index(trained) + 1) % len(classes)]


def robustness_report(
    model: Classifier,
    dataset: Dataset,
    seed: int = 0,
    rates: Sequence[float] = RATES,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Every robustness score of a classifier on one dataset.

    Returns:
        ``{"overall": metrics, "subsets": {"image": metrics, ...} (from evaluate_classifier), "mcar":
        mcar_curves(...), "mnar": mnar_test(...)}``; ``mnar`` only when the model's config has a training
        MNAR setting (:func:`mnar_setting`), flipped to :func:`flipped_class` at the same rate, and then
        with ``"trained_label"`` added.
    """
    scored = evaluate_classifier(model, dataset, batch_size)
    es = embed_dataset(model, dataset, batch_size)
    out: dict[str, Any] = {
        "overall": _floats(scored["overall"]),
        "subsets": {k: _floats(v) for k, v in scored["subsets"].items()},
        "mcar": mcar_curves(model, dataset, rates, seed, batch_size, embedded=es),
    }
    entry = mnar_setting(model.config)
    if entry is not None and entry.value in model.classes:
        flipped = flipped_class(model.classes, entry.value)
        out["mnar"] = {
            **mnar_test(model, dataset, entry.modality, entry.rate, flipped, seed, batch_size, embedded=es),
            "trained_label": entry.value,
        }
    return out
