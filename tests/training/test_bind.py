"""Binding a new modality into a trained space (``model.init: RUN`` with modalities RUN lacks): only the new
towers train, the old embeddings stay bit-identical, and pairs never seen together in binding align."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from omnibind.config import config_from_dict
from omnibind.errors import OmnibindError
from omnibind.model import OmniModel
from omnibind.training.trainer import train

SOURCE = "builtin:shapes?n=600&image_size=16&seconds=0.25"
IMAGE = {"kind": "image", "size": 16, "encoder": {"name": "conv2d", "width": 8}}
TABLE = {"kind": "tabular", "columns": ["width", "height", "x", "y"]}


def _raw(modalities: dict, **data: object) -> dict:
    return {
        "data": {"source": SOURCE, "val_fraction": 0.1, "test_fraction": 0.1, **data},
        "modalities": modalities,
        "model": {"dim": 16},
        "train": {"batch_size": 32, "epochs": 2, "progress": False, "warmup_steps": 2, "threads": 1},
    }


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bind") / "base"
    train(config_from_dict(_raw({"image": IMAGE, "caption": {"kind": "text"}})), out)
    return out


def test_binding_trains_only_the_new_tower_and_keeps_the_old_embeddings(base: Path, tmp_path: Path) -> None:
    raw = _raw(
        {"image": IMAGE, "caption": {"kind": "text"}, "table": TABLE},
        missing=[{"modality": "caption", "rate": 1.0}],  # binding data: image-table pairs only
    )
    raw["model"]["init"] = str(base)
    result = train(config_from_dict(raw), tmp_path / "bound")
    old, new = OmniModel.load(base / "model"), OmniModel.load(tmp_path / "bound" / "model")
    assert new.modalities == ("image", "caption", "table")  # the saved model holds every modality
    before, after = old.state_dict(), new.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # old towers and logit scale untouched
    fresh = OmniModel(
        config_from_dict(json.loads((tmp_path / "bound" / "model" / "config.json").read_text())["config"])
    )
    assert any(
        not torch.equal(after[k], v) for k, v in fresh.state_dict().items() if k.startswith("encoders.table")
    )
    texts = ["a red square", "a small blue circle"]
    torch.testing.assert_close(new.embed(texts, "caption"), old.embed(texts, "caption"), rtol=0, atol=0)

    # emergent: caption and table were never in one binding item, yet caption->table ranks far above chance
    from omnibind.cli.evaluate import evaluate_run

    metrics = evaluate_run(tmp_path / "bound", data=None, out=tmp_path / "m.json", overwrite=True)
    r1 = metrics["retrieval"]["caption->table"]["r@1"] if "retrieval" in metrics else None
    print(f"emergent caption->table R@1 {r1:.3f} (chance {1 / 60:.3f})")
    assert r1 is not None and r1 > 5 / 60, metrics.get("retrieval", {}).get("caption->table")
    assert result.steps > 0


def test_binding_must_declare_every_old_modality(base: Path, tmp_path: Path) -> None:
    raw = _raw({"image": IMAGE, "table": TABLE})
    raw["model"]["init"] = str(base)
    with pytest.raises(OmnibindError, match="declare every modality of that run too .missing here: caption"):
        train(config_from_dict(raw), tmp_path / "bound")
    assert not (tmp_path / "bound").exists()


def test_binding_needs_an_item_pairing_the_new_modality_with_an_old_one(base: Path, tmp_path: Path) -> None:
    raw = _raw(
        {"image": IMAGE, "caption": {"kind": "text"}, "table": TABLE},
        # every item with a table has lost both trained modalities: nothing pairs table with them
        missing=[{"modality": "caption", "rate": 1.0}, {"modality": "image", "rate": 1.0}],
    )
    raw["model"]["init"] = str(base)
    with pytest.raises(OmnibindError, match=r"binding 'table' into .*no training item has 'table' together"):
        train(config_from_dict(raw), tmp_path / "bound")
    assert not (tmp_path / "bound").exists()  # refused before the run folder is written
