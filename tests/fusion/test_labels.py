"""Labels of a task: label field, facts, columns, combinations, numeric order, multi-label, unseen classes."""

from __future__ import annotations

import pytest
import torch

from omnibind.data.dataset import Dataset
from omnibind.data.record import Record
from omnibind.errors import DataError
from omnibind.fusion.labels import encode_labels, fit_classes, item_labels


def _ds(records: list[Record]) -> Dataset:
    n = len(records)
    return Dataset(records, ("a",), {}, torch.ones(n, 1, dtype=torch.bool), {"a": torch.arange(n)})


def test_label_fact_column_and_combination() -> None:
    ds = _ds(
        [
            Record("1", {}, label=10, facts={"mark": 0, "tone": 1}, metadata={"site": "x"}),
            Record("2", {}, label=2, facts={"mark": 1, "tone": 1}, metadata={"site": "y"}),
        ]
    )
    assert item_labels(ds, "label") == ["10", "2"]
    assert fit_classes(item_labels(ds, "label")) == ["2", "10"]  # numeric order
    assert item_labels(ds, "site") == ["x", "y"]
    assert item_labels(ds, "mark+tone") == ["mark=0,tone=1", "mark=1,tone=1"]
    with pytest.raises(DataError, match="id='1'.*no 'colour'.*facts: mark, tone"):
        item_labels(ds, "colour")


def test_multilabel_and_unseen_classes() -> None:
    ds = _ds([Record("1", {}, label="a|b"), Record("2", {}, label=["c"]), Record("3", {}, label="b")])
    labels = item_labels(ds, "label", multilabel=True)
    assert labels == [["a", "b"], ["c"], ["b"]]
    classes = fit_classes(labels)
    assert encode_labels(labels, classes).tolist() == [[1, 1, 0], [0, 0, 1], [0, 1, 0]]
    with pytest.raises(DataError, match="id='1': class 'q' in split 'test'"):
        encode_labels(["q"], ["a", "b"], _ds([Record("1", {}, label="q")]), "test")


def test_tasks_fit_encode_and_split_back() -> None:
    from omnibind.config import TaskConfig
    from omnibind.errors import OmnibindError
    from omnibind.fusion.labels import encode_targets, fit_tasks, label_tasks, split_targets

    ds = _ds(
        [
            Record("1", {}, label="b", metadata={"tags": "p|q"}),
            Record("2", {}, label="a", metadata={"tags": "r"}),
            Record("3", {}, label="b", metadata={"tags": "q"}),
        ]
    )
    task = TaskConfig(label=["label", "tags"], multilabel=["tags"])
    with pytest.raises(OmnibindError, match="fitted classes of label, tags"):
        label_tasks(task)
    fit_tasks(task, ds)
    assert task.classes == {"label": ["a", "b"], "tags": ["p", "q", "r"]}
    first, second = label_tasks(task)
    assert (first.columns, first.multilabel, second.columns, second.multilabel) == (
        slice(0, 2),
        False,
        slice(2, 5),
        True,
    )
    targets = encode_targets([first, second], ds)
    assert targets.tolist() == [[0, 1, 1, 1, 0], [1, 0, 0, 0, 1], [0, 1, 0, 1, 0]]
    back = split_targets(targets, [first, second])
    assert back["label"].tolist() == [1, 0, 1] and back["tags"].tolist() == targets[:, 2:].tolist()

    single = TaskConfig(label="label")
    fit_tasks(single, ds)
    assert single.classes == ["a", "b"]  # one task: the plain list, as before multi-task
    (only,) = label_tasks(single)
    assert encode_targets([only], ds).tolist() == [1, 0, 1]  # class indices, not one-hot
