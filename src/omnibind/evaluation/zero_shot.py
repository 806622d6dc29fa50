"""Zero-shot classification: embed one prompt set (or prototype) per class, predict the nearest class.

A *class* is a tuple of values, one per field (``("red", "circle")`` for fields ``["colour", "shape"]``),
so a class can be a label, one ground-truth fact or a combination of facts.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def class_keys(facts_or_labels: Sequence[Any], fields: Sequence[str]) -> list[tuple[Any, ...]]:
    """The class of every item: a tuple of its values of ``fields``.

    Args:
        facts_or_labels: per item either a dict (its facts; a ``"label"`` entry, if any, is the label) or a
            plain label value. To combine facts and label, pass ``{**facts, "label": label}``.
        fields: fact names; ``"label"`` names the label.

    Returns:
        one tuple per item, ``len(fields)`` values each.

    Raises:
        ValueError: an item lacks a field (the message names the item index and the field).

    Example:
        >>> class_keys([{"shape": "circle", "colour": "red"}], ["colour", "shape"])
        [('red', 'circle')]
        >>> class_keys(["cat", "dog"], ["label"])
        [('cat',), ('dog',)]
    """
    if not fields:
        raise ValueError("class_keys needs at least one field")
    keys = []
    for i, item in enumerate(facts_or_labels):
        if isinstance(item, Mapping):
            missing = [f for f in fields if f not in item]
            if missing:
                raise ValueError(f"item {i} has no field {missing[0]!r}; it has {sorted(item)}")
            keys.append(tuple(item[f] for f in fields))
        else:
            if list(fields) != ["label"]:
                raise ValueError(f"item {i} is a plain label, so the only field can be 'label', got {fields}")
            keys.append((item,))
    return keys


def _class_name(key: tuple[Any, ...]) -> str:
    return ", ".join(str(v) for v in key)


def zero_shot_accuracy(
    target_embs: Tensor,
    item_keys: Sequence[tuple[Any, ...]],
    class_embs: Tensor,
    class_list: Sequence[tuple[Any, ...]],
) -> dict[str, Any]:
    """Accuracy of predicting each item's class as the class embedding with the highest dot product.

    Args:
        target_embs: the items' embeddings.
        item_keys: the true class of each item (from :func:`class_keys`).
        class_embs: one embedding per class (a mean of prompt embeddings, or :func:`prototypes`).
        class_list: the class of each row of ``class_embs``.

    Inputs:
        target_embs: ``[n, D]``; class_embs: ``[C, D]``.

    Returns:
        ``{"accuracy": float, "n": int, "per_class": {"v1, v2": accuracy}}``; NaN accuracy when n is 0. Ties
        go to the class listed first.

    Raises:
        ValueError: an item's class is not in ``class_list``, or the shapes disagree.

    Example:
        >>> zero_shot_accuracy(torch.eye(2), [("a",), ("b",)], torch.eye(2), [("a",), ("b",)])["accuracy"]
        1.0
    """
    if target_embs.shape[0] != len(item_keys):
        raise ValueError(f"{target_embs.shape[0]} embeddings but {len(item_keys)} item keys")
    if class_embs.shape[0] != len(class_list):
        raise ValueError(f"{class_embs.shape[0]} class embeddings but {len(class_list)} classes")
    index = {tuple(key): c for c, key in enumerate(class_list)}
    truth = []
    for i, key in enumerate(item_keys):
        if tuple(key) not in index:
            raise ValueError(
                f"item {i} has class {tuple(key)!r}, which is not among the {len(index)} classes"
            )
        truth.append(index[tuple(key)])
    n = len(truth)
    if n == 0:
        return {"accuracy": float("nan"), "n": 0, "per_class": {}}
    pred = (target_embs.float() @ class_embs.float().T).argmax(dim=1)  # [n]
    truth_t = torch.tensor(truth)
    correct = (pred == truth_t).float()
    per_class = {
        _class_name(tuple(class_list[c])): float(correct[truth_t == c].mean()) for c in sorted(set(truth))
    }
    return {"accuracy": float(correct.mean()), "n": n, "per_class": per_class}


def _template_fields(template: str) -> list[str]:
    names = []
    for _, field, _, _ in string.Formatter().parse(template):
        if field is not None:
            names.append(field.split(".")[0].split("[")[0])  # "{a.b}" / "{a[0]}" name field "a"
    return names


def format_prompts(
    templates: Sequence[str], fields: Sequence[str], class_list: Sequence[tuple[Any, ...]]
) -> list[list[str]]:
    """Fill the prompt templates for every class.

    Args:
        templates: strings with ``{field}`` slots, e.g. ``"a photo of a {colour} {shape}"``.
        fields: the names of the values in each class tuple.
        class_list: the classes.

    Returns:
        one list of ``len(templates)`` prompts per class.

    Raises:
        ValueError: a template has a {slot} that is not a field (or a positional one), or a class has
            the wrong number of values.

    Example:
        >>> format_prompts(["a {colour} {shape}"], ["colour", "shape"], [("red", "circle")])
        [['a red circle']]
    """
    for template in templates:
        for name in _template_fields(template):
            if name not in fields:
                raise ValueError(
                    f"template {template!r} has the slot {{{name}}}, but the fields are {list(fields)}"
                )
    prompts = []
    for key in class_list:
        if len(key) != len(fields):
            raise ValueError(f"class {tuple(key)!r} has {len(key)} values but there are {len(fields)} fields")
        values = dict(zip(fields, key, strict=True))
        prompts.append([template.format(**values) for template in templates])
    return prompts


def prototypes(embs: Tensor, keys: Sequence[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], Tensor]:
    """One class embedding per class: the L2-normalised mean of its items' embeddings.

    Inputs:
        embs: ``[n, D]``; keys: ``n`` class tuples.

    Returns:
        ``(class_list, [C, D])``, classes in order of first appearance.

    Example:
        >>> embs = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
        >>> classes, protos = prototypes(embs, [(0,), (0,), (1,)])
        >>> classes, protos.tolist()
        ([(0,), (1,)], [[1.0, 0.0], [0.0, 1.0]])
    """
    if embs.shape[0] != len(keys):
        raise ValueError(f"{embs.shape[0]} embeddings but {len(keys)} keys")
    index: dict[tuple[Any, ...], int] = {}
    assign = torch.tensor([index.setdefault(tuple(k), len(index)) for k in keys], dtype=torch.long)
    sums = torch.zeros(len(index), embs.shape[1], dtype=embs.dtype).index_add_(0, assign, embs)  # [C, D]
    return list(index), F.normalize(sums, dim=1)


def candidate_accuracy(
    query_embs: Sequence[Tensor], candidate_embs: Tensor, truth: Tensor, similarity: str = "sum"
) -> dict[str, Any]:
    """Accuracy of picking the true candidate from an explicit list, given one or more query modalities.

    This is the Symile paper's XOR test ("pick b among all 2^d candidates given a and c"): the
    candidates are every possible value of the target, scored with the model's joint similarity.

    Inputs:
        query_embs: one ``[n, D]`` tensor per query modality (same items in the same order).
        candidate_embs: ``[C, D]``, one row per candidate.
        truth: ``long[n]``, the index of each item's true candidate.

    Returns:
        ``{"accuracy", "n"}``; ties go to the lower candidate index (argmax).

    Example:
        >>> import torch
        >>> e = torch.eye(3)
        >>> candidate_accuracy([e], e, torch.tensor([0, 1, 2]))["accuracy"]
        1.0
    """
    from omnibind.evaluation.retrieval import joint_scores

    scores = joint_scores(list(query_embs), candidate_embs, similarity)  # [n, C]
    hits = (scores.argmax(dim=1) == truth).double()  # a share of a count: no float32 rounding
    return {"accuracy": float(hits.mean()) if len(hits) else float("nan"), "n": int(len(hits))}
