"""The supervised loop: end to end on shapes, exact resume, init from a trained run, frozen encoders, and
the documented label behaviour (unseen class at test, class present in one split only, missing label)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from omnibind.config import config_from_dict
from omnibind.data.loading import build_kinds, build_splits
from omnibind.errors import DataError, OmnibindError
from omnibind.fusion.classifier import Classifier
from omnibind.training.callbacks import Callback
from omnibind.training.classify import train_classifier
from omnibind.training.trainer import train
from tests.helpers import tiny_shapes_config


def _shapes(head: str = "late", **task: object) -> dict:
    raw = tiny_shapes_config(n=160, epochs=2, threads=1)
    raw.pop("eval")
    raw["task"] = {"type": "classify", "label": "mark+tone", "head": head, "modality_dropout": 0.3, **task}
    return raw


def _manifest(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    """JSONL items with two embedding modalities; ``rows`` are (split, label)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "items.jsonl"
    with path.open("w") as f:
        for i, (split, label) in enumerate(rows):
            f.write(
                json.dumps(
                    {
                        "id": i,
                        "split": split,
                        "label": label,
                        "a": rng.normal(size=4).tolist(),
                        "b": rng.normal(size=3).tolist(),
                    }
                )
                + "\n"
            )
    return path


def _manifest_config(path: Path) -> dict:
    return {
        "modalities": {"a": {"kind": "embedding", "dim": 4}, "b": {"kind": "embedding", "dim": 3}},
        "data": {"source": str(path)},
        "model": {"dim": 8},
        "train": {"epochs": 1, "batch_size": 8, "progress": False, "threads": 1},
        "task": {"type": "classify", "head": "attention", "head_options": {"width": 8}},
    }


def test_trains_saves_loads_and_scores_every_subset(tmp_path: Path) -> None:
    result = train_classifier(config_from_dict(_shapes("sequential")), tmp_path / "run")
    run = tmp_path / "run"
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "metrics.json",
        "model/config.json",
        "model/model.safetensors",
    ):
        assert (run / name).exists(), name
    assert result.model.classes == ["mark=0,tone=0", "mark=0,tone=1", "mark=1,tone=0", "mark=1,tone=1"]
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert len(test["subsets"]) == 2**4 - 1 and "image+caption" in test["subsets"]
    assert set(test["overall"]) == {"accuracy", "macro_f1", "auroc", "n"}
    log = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("val/accuracy" in x for x in log) and any("train/loss" in x for x in log)

    loaded = Classifier.load(run)
    splits = build_splits(
        loaded.config, build_kinds(loaded.config), wanted=("test",), fit=False, progress=False
    )
    batch = splits.datasets["test"].batch(range(8))
    result.model.eval()
    assert torch.equal(result.model(batch).logits, loaded(batch).logits)


def test_resume_after_a_crash_reaches_the_same_weights(tmp_path: Path) -> None:
    class Crash(Callback):
        def on_step(self, step: int, logs: dict) -> None:
            if step == 5:
                raise KeyboardInterrupt("simulated crash")

    raw = _shapes("attention", head_options={"width": 16})
    raw["train"]["checkpoint_every"] = 2
    train_classifier(config_from_dict(raw), tmp_path / "full", evaluate=False)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(config_from_dict(raw), tmp_path / "crashed", evaluate=False, callbacks=[Crash()])
    train_classifier(config_from_dict(raw), tmp_path / "crashed", resume=True, evaluate=False)
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "crashed" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_a_trained_run_and_frozen_encoders(tmp_path: Path) -> None:
    pre = tiny_shapes_config(n=160, epochs=1, threads=1)
    pre.pop("eval")
    train(config_from_dict(pre), tmp_path / "aligned")
    aligned = load_file(str(tmp_path / "aligned" / "model" / "model.safetensors"))

    raw = _shapes("late", init=str(tmp_path / "aligned"), freeze_encoders=True)
    result = train_classifier(config_from_dict(raw), tmp_path / "clf", evaluate=False)
    mine = load_file(str(tmp_path / "clf" / "model" / "model.safetensors"))
    for key, value in aligned.items():
        if key.startswith(("encoders.", "projections.")):
            assert torch.equal(mine["encoder." + key], value), key  # started from them, never changed
    saved = json.loads((tmp_path / "aligned" / "model" / "config.json").read_text())["config"]
    assert result.model.config.modalities["table"].stats == saved["modalities"]["table"]["stats"]

    bad = _shapes("late", init=str(tmp_path / "aligned"))
    bad["model"]["dim"] = 32
    with pytest.raises(OmnibindError, match="model.dim"):
        train_classifier(config_from_dict(bad), tmp_path / "bad")


def test_an_unseen_class_at_test_is_a_clear_error_and_nothing_is_written(tmp_path: Path) -> None:
    rows = [("train", "x"), ("train", "y")] * 8 + [("val", "x"), ("test", "y"), ("test", "z")]
    cfg = config_from_dict(_manifest_config(_manifest(tmp_path, rows)))
    with pytest.raises(
        DataError, match=r"class 'z' in split 'test' never occurs in the training split.*x, y"
    ):
        train_classifier(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_class_present_only_in_training_stays_a_class(tmp_path: Path) -> None:
    rows = [("train", "x"), ("train", "y"), ("train", "w")] * 6 + [("val", "x"), ("test", "x"), ("test", "y")]
    result = train_classifier(config_from_dict(_manifest_config(_manifest(tmp_path, rows))), tmp_path / "run")
    assert result.model.classes == ["w", "x", "y"]
    assert result.test is not None and result.test["overall"]["n"] == 2
    assert result.test["subsets"]["a"]["n"] == 2


def test_an_item_without_a_label_is_named(tmp_path: Path) -> None:
    path = _manifest(tmp_path, [("train", "x")] * 4)
    with path.open("a") as f:
        f.write(json.dumps({"id": "nolabel", "split": "train", "a": [0, 0, 0, 0]}) + "\n")
    with pytest.raises(DataError, match="id='nolabel'.*has no 'label'"):
        train_classifier(config_from_dict(_manifest_config(path)), tmp_path / "run")


def test_config_errors_name_the_key() -> None:
    raw = _shapes("lat")
    with pytest.raises(OmnibindError, match="did you mean 'late'"):
        config_from_dict(raw)
    raw = _shapes()
    raw["task"]["modality_dropot"] = 0.1
    with pytest.raises(OmnibindError, match="did you mean 'modality_dropout'"):
        config_from_dict(raw)
    raw = _shapes(modality_dropout=1.0)
    with pytest.raises(OmnibindError, match="modality_dropout"):
        config_from_dict(raw)
    cfg = config_from_dict(_shapes("experts", head_options={"width": 16}))
    assert config_from_dict(cfg.to_dict()) == cfg
    plain = tiny_shapes_config()
    assert "task" not in config_from_dict(plain).to_dict()


def test_prepared_splits_give_the_same_model_and_must_match_the_modalities(tmp_path: Path) -> None:
    from omnibind.data.loading import build_kinds, build_splits

    rows = [("train", "x"), ("train", "y")] * 8 + [("val", "x"), ("test", "y")]
    raw = _manifest_config(_manifest(tmp_path, rows))
    train_classifier(config_from_dict(raw), tmp_path / "own", evaluate=False)
    cfg = config_from_dict(raw)
    splits = build_splits(cfg, build_kinds(cfg), progress=False)
    train_classifier(cfg, tmp_path / "given", evaluate=False, splits=splits)
    a = load_file(str(tmp_path / "own" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "given" / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    raw["modalities"].pop("b")
    with pytest.raises(OmnibindError, match="prepared 'train' split has a, b; the config declares a"):
        train_classifier(config_from_dict(raw), tmp_path / "bad", splits=splits)
