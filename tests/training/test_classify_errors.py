"""Bad input to the supervised loop, each a clear error or a documented behaviour: a class seen only in
validation, an item with no modality present (manifest: an error naming it, or skipped on request;
built-in source: not an item of a model that does not declare what it has), an item missing one task's
label. (Unseen test classes, training-only classes and unlabelled items: tests/training/test_classify.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnibind.config import config_from_dict
from omnibind.data.sources import load_source
from omnibind.errors import DataError
from omnibind.training.classify import train_classifier
from tests.training.test_classify import _manifest, _manifest_config


def test_a_class_only_in_validation_is_an_error_before_anything_is_written(tmp_path: Path) -> None:
    rows = [("train", "x"), ("train", "y")] * 6 + [("val", "v"), ("test", "x")]
    cfg = config_from_dict(_manifest_config(_manifest(tmp_path, rows)))
    with pytest.raises(DataError, match=r"id='12': class 'v' in split 'val' never occurs in the training"):
        train_classifier(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _with_empty_row(tmp_path: Path) -> Path:
    path = _manifest(tmp_path, [("train", "x"), ("train", "y")] * 6 + [("val", "x"), ("test", "y")])
    with path.open("a") as f:
        f.write(json.dumps({"id": "empty", "split": "train", "label": "x", "a": None}) + "\n")
    return path


def test_an_item_with_no_modality_is_named_and_stops_the_run(tmp_path: Path) -> None:
    cfg = config_from_dict(_manifest_config(_with_empty_row(tmp_path)))
    with pytest.raises(
        DataError, match=r"items.jsonl:15, id='empty', field 'id': expected at least one modality"
    ):
        train_classifier(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_with_on_error_skip_an_item_with_no_modality_is_skipped_and_reported(tmp_path: Path) -> None:
    raw = _manifest_config(_with_empty_row(tmp_path))
    raw["data"]["on_error"] = "skip"
    result = train_classifier(config_from_dict(raw), tmp_path / "run")
    skipped = [json.loads(x) for x in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert [s["id"] for s in skipped] == ["empty"] and "at least one modality" in skipped[0]["reason"]
    assert result.test is not None and result.test["overall"]["n"] == 1


def test_a_builtin_item_without_the_declared_modality_is_not_an_item_of_that_model(tmp_path: Path) -> None:
    """A unimodal model on shapes (table only, half the tables missing) trains and is scored on the items
    that have a table: an item whose only modalities are undeclared ones has nothing this model can read."""
    raw = {
        "modalities": {"table": {"kind": "tabular", "columns": ["width", "height", "x", "y"]}},
        "data": {"source": "builtin:shapes?n=200&missing=0.5&image_size=16&seconds=0.25"},
        "model": {"dim": 8},
        "train": {"epochs": 1, "batch_size": 32, "progress": False, "threads": 1},
        "task": {"type": "classify", "label": "size", "head": "late"},
    }
    result = train_classifier(config_from_dict(raw), tmp_path / "run")
    generated = load_source(raw["data"]["source"]).records  # every modality, split set by the generator
    test = [r for r in generated if r.split == "test"]
    with_table = sum("table" in r.values for r in test)
    assert 0 < with_table < len(test)
    assert result.test is not None and result.test["overall"]["n"] == with_table


def test_an_item_missing_the_label_of_one_task_is_named(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    rows = [
        {"id": i, "split": "train", "label": "xy"[i % 2], "meta.site": "s1", "a": [0, 0, 0, 0]}
        for i in range(4)
    ]
    rows.append({"id": "nosite", "split": "train", "label": "x", "a": [0, 0, 0, 0]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = _manifest_config(path)
    raw["task"]["label"] = ["label", "site"]
    with pytest.raises(
        DataError, match=r"id='nosite', field 'site': task.label 'site': the item has no 'site'"
    ):
        train_classifier(config_from_dict(raw), tmp_path / "run")
    assert not (tmp_path / "run").exists()
