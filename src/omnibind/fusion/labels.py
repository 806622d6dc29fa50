"""Class labels of a supervised task: read them from items, fit the class list, turn them into targets.

``task.label`` names where a class comes from: ``label`` (the record's label), a fact of a built-in
source, or a manifest column (``Record.metadata``); ``a+b`` makes the class the combination of several
(``"mark=0,tone=1"``). Classes are strings, so ``1`` in a CSV and ``"1"`` in JSONL are the same class.

Documented behaviour (tested in ``tests/training/test_classify.py``):

- the class list is the sorted set of training classes; it is saved with the model;
- an item with no value for the label is an error that names the item;
- a validation or test item whose class never occurs in training is an error that names the item, the
  class and the known classes (a classifier cannot predict a class it never saw);
- a training class absent from validation or test is fine: it stays in the class list, the model may
  still predict it, and macro-F1 averages over the classes that occur in the true labels or predictions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from omnibind.data.dataset import Dataset
from omnibind.errors import DataError


def _value(record: Any, name: str) -> Any:
    if name == "label":
        return record.label
    if record.facts and name in record.facts:
        return record.facts[name]
    return record.metadata.get(name)


def _missing(record: Any, label: str, name: str) -> DataError:
    facts = ", ".join(sorted(record.facts or {})) or "none"
    columns = ", ".join(sorted(record.metadata)) or "none"
    return DataError(
        f"task.label '{label}': the item has no '{name}' (facts: {facts}; other columns: {columns})",
        source=record.source,
        line=record.line,
        record_id=record.id,
        modality=name,
    )


def item_labels(dataset: Dataset, label: str, multilabel: bool = False) -> list[str | list[str]]:
    """The class (a string) of every item, or its list of classes when ``multilabel``.

    Raises:
        DataError: an item has no value for the label (naming the item and what it has instead).
    """
    names = [n.strip() for n in label.split("+")]
    if multilabel and len(names) > 1:
        raise DataError(f"task.label '{label}': a multi-label task takes one label field, not a combination")
    out: list[str | list[str]] = []
    for record in dataset.records:
        values = [_value(record, n) for n in names]
        for n, v in zip(names, values, strict=True):
            if v is None:
                raise _missing(record, label, n)
        if multilabel:
            v = values[0]
            parts = (
                v.split("|") if isinstance(v, str) else list(v) if isinstance(v, (list, tuple, set)) else [v]
            )
            out.append(sorted({str(p).strip() for p in parts if str(p).strip()}))
        elif len(names) == 1:
            out.append(str(values[0]))
        else:
            out.append(",".join(f"{n}={v}" for n, v in zip(names, values, strict=True)))
    return out


def _sort_key(name: str) -> tuple[int, float, str]:
    try:
        return (0, float(name), name)  # numeric classes in numeric order: 2 before 10
    except ValueError:
        return (1, 0.0, name)


def fit_classes(labels: list[str | list[str]]) -> list[str]:
    """The sorted class list of the training labels (numbers in numeric order)."""
    seen: set[str] = set()
    for value in labels:
        seen.update(value if isinstance(value, list) else [value])
    return sorted(seen, key=_sort_key)


def encode_labels(
    labels: list[str | list[str]], classes: list[str], dataset: Dataset | None = None, split: str = ""
) -> Tensor:
    """Class indices ``long[N]``, or multi-hot ``float[N, C]`` for multi-label values.

    Raises:
        DataError: a class that is not in ``classes`` (the message names the item when ``dataset`` is
            given, the split, the class and the known classes).
    """
    index = {c: i for i, c in enumerate(classes)}
    multilabel = bool(labels) and isinstance(labels[0], list)
    hot = torch.zeros(len(labels), len(classes)) if multilabel else None
    idx = torch.empty(len(labels), dtype=torch.long)
    for i, value in enumerate(labels):
        for c in value if isinstance(value, list) else [value]:
            if c not in index:
                record = dataset.records[i] if dataset is not None else None
                where = f" in split '{split}'" if split else ""
                raise DataError(
                    f"class {c!r}{where} never occurs in the training split, so no classifier can predict "
                    f"it; known classes: {', '.join(classes)}. Drop such items or move some to training.",
                    source=record.source if record else None,
                    line=record.line if record else None,
                    record_id=record.id if record else None,
                )
            if hot is not None:
                hot[i, index[c]] = 1.0
            else:
                idx[i] = index[c]
    return hot if hot is not None else idx
