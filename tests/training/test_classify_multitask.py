"""Several tasks at once: one head whose logits are split per task, on shapes (two facts) and on a manifest
with two label columns (one multi-label); per-task metrics, save/load, exact resume and config checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from omnibind.config import config_from_dict
from omnibind.data.loading import build_kinds, build_splits
from omnibind.errors import ConfigError, DataError, OmnibindError
from omnibind.evaluation.classification import classification_metrics, evaluate_classifier
from omnibind.fusion.classifier import Classifier
from omnibind.fusion.labels import encode_targets, split_targets
from omnibind.training.callbacks import Callback
from omnibind.training.classify import train_classifier
from tests.helpers import tiny_shapes_config


def _shapes(head: str = "late", **task: object) -> dict:
    raw = tiny_shapes_config(n=160, epochs=2, threads=1)
    raw.pop("eval")
    raw["task"] = {"type": "classify", "label": ["shape", "colour"], "head": head, **task}
    return raw


def _manifest(tmp_path: Path, rows: list[tuple[str, str, str]]) -> Path:
    """JSONL items with two embedding modalities; ``rows`` are (split, label, tags) with tags "a|b"."""
    rng = np.random.default_rng(0)
    path = tmp_path / "items.jsonl"
    with path.open("w") as f:
        for i, (split, label, tags) in enumerate(rows):
            item = {"id": i, "split": split, "label": label, "meta.tags": tags}
            item |= {"a": rng.normal(size=4).tolist(), "b": rng.normal(size=3).tolist()}
            f.write(json.dumps(item) + "\n")
    return path


def _manifest_config(path: Path) -> dict:
    return {
        "modalities": {"a": {"kind": "embedding", "dim": 4}, "b": {"kind": "embedding", "dim": 3}},
        "data": {"source": str(path)},
        "model": {"dim": 8},
        "train": {"epochs": 2, "batch_size": 8, "progress": False, "threads": 1},
        "task": {"type": "classify", "label": ["label", "tags"], "multilabel": ["tags"], "head": "late"},
    }


def test_two_facts_of_shapes_as_two_tasks(tmp_path: Path) -> None:
    result = train_classifier(config_from_dict(_shapes("sequential")), tmp_path / "run")
    model = result.model
    assert [t.name for t in model.tasks] == ["shape", "colour"]
    shape, colour = model.tasks
    n_shape, n_colour = len(shape.classes), len(colour.classes)
    assert n_shape > 1 and n_colour > 1 and model.head.num_classes == n_shape + n_colour
    assert (shape.columns, colour.columns) == (slice(0, n_shape), slice(n_shape, n_shape + n_colour))
    with pytest.raises(OmnibindError, match="2 tasks \\(shape, colour\\).*\\.tasks"):
        _ = model.classes

    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert set(test) == {"overall", "subsets", "tasks"} and set(test["tasks"]) == {"shape", "colour"}
    for name, task in test["tasks"].items():
        assert task["classes"] == list(model.tasks[0 if name == "shape" else 1].classes)
        assert len(task["subsets"]) == 2**4 - 1
    per_task = [test["tasks"][n]["overall"]["accuracy"] for n in ("shape", "colour")]
    assert test["overall"]["accuracy"] == pytest.approx(sum(per_task) / 2)
    sub = [test["tasks"][n]["subsets"]["image+sound"]["macro_f1"] for n in ("shape", "colour")]
    assert test["subsets"]["image+sound"]["macro_f1"] == pytest.approx(sum(sub) / 2)
    log = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    validations = [x for x in log if "val/accuracy" in x]
    assert validations and all("val/shape/accuracy" in x and "val/colour/macro_f1" in x for x in validations)

    # Each task's scores are those of its own columns of the logits, scored as a single task would be.
    loaded = Classifier.load(tmp_path / "run")
    assert loaded.tasks == model.tasks
    ds = build_splits(loaded.config, build_kinds(loaded.config), ("test",), fit=False, progress=False)
    test_set = ds.datasets["test"]
    logits = loaded(test_set.batch(range(len(test_set)))).logits
    truth = split_targets(encode_targets(loaded.tasks, test_set), loaded.tasks)
    parts = loaded.split_logits(logits)
    for name in ("shape", "colour"):
        again = classification_metrics(parts[name], truth[name])
        assert again["accuracy"] == pytest.approx(test["tasks"][name]["overall"]["accuracy"])
    model.eval()
    assert torch.equal(model(test_set.batch(range(8))).logits, loaded(test_set.batch(range(8))).logits)


def test_a_manifest_with_two_label_columns_one_multilabel(tmp_path: Path) -> None:
    rows = [("train", "x", "p|q"), ("train", "y", "q"), ("train", "x", "r")] * 6
    rows += [("val", "y", "p"), ("test", "x", "q|r"), ("test", "y", "p")]
    cfg = config_from_dict(_manifest_config(_manifest(tmp_path, rows)))
    result = train_classifier(cfg, tmp_path / "run")
    label, tags = result.model.tasks
    assert (label.classes, label.multilabel) == (("x", "y"), False)
    assert (tags.classes, tags.multilabel) == (("p", "q", "r"), True)
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["config"]["task"]
    assert saved["classes"] == {"label": ["x", "y"], "tags": ["p", "q", "r"]}
    assert result.test is not None and result.test["tasks"]["tags"]["overall"]["n"] == 2

    ds = build_splits(cfg, build_kinds(cfg), ("test",), fit=False, progress=False).datasets["test"]
    targets = encode_targets(result.model.tasks, ds)
    assert targets.tolist() == [[1, 0, 0, 1, 1], [0, 1, 1, 0, 0]]  # one-hot label | multi-hot tags
    again = evaluate_classifier(Classifier.load(tmp_path / "run"), ds, by_subset=False)
    assert again["tasks"]["tags"]["overall"] == result.test["tasks"]["tags"]["overall"]


def test_an_unseen_class_of_the_second_task_names_the_task(tmp_path: Path) -> None:
    rows = [("train", "x", "p"), ("train", "y", "q")] * 6 + [("val", "x", "p"), ("test", "y", "s")]
    cfg = config_from_dict(_manifest_config(_manifest(tmp_path, rows)))
    with pytest.raises(DataError, match="id='13': task.label 'tags': class 's' in split 'test'.*p, q"):
        train_classifier(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_resume_of_a_multitask_run_reaches_the_same_weights(tmp_path: Path) -> None:
    class Crash(Callback):
        def on_step(self, step: int, logs: dict) -> None:
            if step == 5:
                raise KeyboardInterrupt("simulated crash")

    raw = _shapes("attention", head_options={"width": 16}, modality_dropout=0.3)
    raw["train"]["checkpoint_every"] = 2
    train_classifier(config_from_dict(raw), tmp_path / "full", evaluate=False)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(config_from_dict(raw), tmp_path / "crashed", evaluate=False, callbacks=[Crash()])
    train_classifier(config_from_dict(raw), tmp_path / "crashed", resume=True, evaluate=False)
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_config_of_several_tasks() -> None:
    cfg = config_from_dict(_shapes(multilabel=False))
    assert cfg.task is not None and cfg.task.label == ["shape", "colour"]
    assert config_from_dict(cfg.to_dict()) == cfg
    one = config_from_dict(_shapes(label=["shape"]))
    assert one.task is not None and one.task.label == "shape"  # a one-entry list is a single task
    with pytest.raises(ConfigError, match="lists a label twice"):
        config_from_dict(_shapes(label=["shape", "shape"]))
    with pytest.raises(ConfigError, match="task.multilabel: a list names.*'size'"):
        config_from_dict(_shapes(multilabel=["size"]))
    with pytest.raises(ConfigError, match="task.multilabel: a list names"):
        config_from_dict(_shapes(label="shape", multilabel=["shape"]))
    with pytest.raises(ConfigError, match="task.label must name a label"):
        config_from_dict(_shapes(label=["shape", "colour+"]))
    with pytest.raises(ConfigError, match="task.label must be a label or a list"):
        config_from_dict(_shapes(label=[]))
    with pytest.raises(ConfigError, match="expects bool or a list"):
        config_from_dict(_shapes(multilabel="yes"))
