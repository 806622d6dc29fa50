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

Several tasks at once (``task.label: [shape, colour]``): each label is a :class:`LabelTask` with its own
classes (and multi-label flag); the head's logits are the tasks' logits side by side, task ``k`` in
columns ``LabelTask.columns``, and the targets of all tasks are one ``float[N, sum C_k]`` tensor (one-hot
for a single-label task, multi-hot for a multi-label one). Every rule above holds per task.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from omnibind.data.dataset import Dataset
from omnibind.errors import DataError, OmnibindError


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
    labels: list[str | list[str]],
    classes: list[str],
    dataset: Dataset | None = None,
    split: str = "",
    label: str = "",
) -> Tensor:
    """Class indices ``long[N]``, or multi-hot ``float[N, C]`` for multi-label values.

    Raises:
        DataError: a class that is not in ``classes`` (the message names the item when ``dataset`` is
            given, the split, the label when ``label`` is given, the class and the known classes).
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
                task = f"task.label '{label}': " if label else ""
                raise DataError(
                    f"{task}class {c!r}{where} never occurs in the training split, so no classifier can "
                    f"predict it; known classes: {', '.join(classes)}. Drop such items or move some to "
                    "training.",
                    source=record.source if record else None,
                    line=record.line if record else None,
                    record_id=record.id if record else None,
                )
            if hot is not None:
                hot[i, index[c]] = 1.0
            else:
                idx[i] = index[c]
    return hot if hot is not None else idx


@dataclass(frozen=True)
class LabelTask:
    """One task of a classifier: its label field, fitted classes, and where its logits sit.

    Attributes:
        name: the label it predicts (an entry of ``task.label``, e.g. ``shape`` or ``mark+tone``).
        classes: its class list, in logit order.
        multilabel: one sigmoid per class (a set of classes per item) instead of a softmax.
        start: its first column in the head's logits ``[B, sum C_k]``.
    """

    name: str
    classes: tuple[str, ...]
    multilabel: bool
    start: int

    @property
    def columns(self) -> slice:
        """The logit (and target) columns of this task."""
        return slice(self.start, self.start + len(self.classes))


def task_names(task: Any) -> list[str]:
    """The label of every task of a ``TaskConfig``: ``[task.label]``, or the list it holds."""
    return [task.label] if isinstance(task.label, str) else list(task.label)


def is_multitask(task: Any) -> bool:
    """Whether a ``TaskConfig`` asks for several tasks (``task.label`` is a list of two or more)."""
    return len(task_names(task)) > 1


def _multilabel(task: Any, name: str) -> bool:
    flag = task.multilabel
    return bool(flag) if isinstance(flag, bool) else name in flag


def fit_tasks(task: Any, dataset: Dataset) -> None:
    """Fit the class list of every task on ``dataset`` (the training split) into ``task.classes``.

    ``task.classes`` becomes a list for one task and ``{label: classes}`` for several.

    Raises:
        DataError: an item without a value for a label (see :func:`item_labels`).
    """
    fitted = {n: fit_classes(item_labels(dataset, n, _multilabel(task, n))) for n in task_names(task)}
    task.classes = fitted if is_multitask(task) else next(iter(fitted.values()))


def label_tasks(task: Any) -> list[LabelTask]:
    """The tasks of a ``TaskConfig`` whose classes are fitted, with their logit columns.

    Raises:
        OmnibindError: the classes are not fitted (or do not match the labels).
    """
    names = task_names(task)
    classes = task.classes if isinstance(task.classes, dict) else {names[0]: task.classes}
    if sorted(classes) != sorted(names) or not all(classes.values()):
        raise OmnibindError(
            f"task.classes must hold the fitted classes of {', '.join(names)} (training fits them); "
            f"got {task.classes!r}"
        )
    out, start = [], 0
    for name in names:
        out.append(LabelTask(name, tuple(classes[name]), _multilabel(task, name), start))
        start += len(classes[name])
    return out


def encode_targets(tasks: list[LabelTask], dataset: Dataset, split: str = "") -> Tensor:
    """The targets of every item for ``tasks``.

    One task: what :func:`encode_labels` gives (``long[N]``, or ``float[N, C]`` multi-hot). Several:
    ``float[N, sum C_k]``, task ``k`` in its ``columns`` (one-hot, or multi-hot when multi-label).

    Raises:
        DataError: an item without a label, or a class its task never saw in training.
    """
    named = len(tasks) > 1  # say which task's class it is; a single task's message stays as it was
    parts = [
        encode_labels(
            item_labels(dataset, t.name, t.multilabel),
            list(t.classes),
            dataset,
            split,
            t.name if named else "",
        )
        for t in tasks
    ]
    if len(tasks) == 1:
        return parts[0]
    hot = [
        y if t.multilabel else torch.nn.functional.one_hot(y, len(t.classes)).float()
        for t, y in zip(tasks, parts, strict=True)
    ]
    return torch.cat(hot, dim=1)  # [N, sum C_k]


def split_targets(targets: Tensor, tasks: list[LabelTask]) -> dict[str, Tensor]:
    """Per task, its targets in the form :func:`encode_labels` gives (inverse of :func:`encode_targets`).

    Inputs:
        targets: from :func:`encode_targets` for the same ``tasks``.

    Returns:
        ``{task name: long[N] class indices, or float[N, C_k] multi-hot}``.
    """
    if len(tasks) == 1:
        return {tasks[0].name: targets}
    return {
        t.name: targets[:, t.columns] if t.multilabel else targets[:, t.columns].argmax(dim=1) for t in tasks
    }
