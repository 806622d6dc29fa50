"""Training with several values per modality: exactness with one value, ``sample`` and ``all`` runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from omnibind.config import config_from_dict
from omnibind.data.loading import build_kinds, build_splits
from omnibind.errors import ConfigError
from omnibind.evaluation.evaluate import evaluate
from omnibind.training.trainer import train
from tests.helpers import tiny_shapes_config


def _raw(source: str = "builtin:shapes?n=160&missing=0.2&image_size=16", **objective: object) -> dict:
    raw = tiny_shapes_config("infonce", n=160, epochs=2, threads=1)
    for name in ("sound", "table"):
        del raw["modalities"][name]
    raw["data"]["source"] = source
    raw["objective"].update(objective)
    raw["eval"]["zero_shot"] = []
    return raw


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def test_one_value_per_item_trains_bit_identically_whatever_the_multi_settings(tmp_path: Path) -> None:
    train(config_from_dict(_raw()), tmp_path / "plain")
    base = _weights(tmp_path / "plain")
    for mode in ("sample", "all"):
        raw = _raw(multi_positive=mode)
        raw["modalities"]["caption"]["multi"] = True
        train(config_from_dict(raw), tmp_path / mode)
        got = _weights(tmp_path / mode)
        assert got.keys() == base.keys()
        assert all(torch.equal(got[k], base[k]) for k in base), mode


@pytest.mark.parametrize("mode", ["sample", "all"])
def test_several_captions_train_and_report_mrv(tmp_path: Path, mode: str) -> None:
    raw = _raw("builtin:shapes?n=160&missing=0.2&image_size=16&captions=3", multi_positive=mode)
    raw["modalities"]["caption"]["multi"] = True
    result = train(config_from_dict(raw), tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(h["train/loss"])) for h in result.history if "train/loss" in h)
    cfg = result.model.config
    assert cfg.modalities["caption"].multi and cfg.objective.multi_positive == mode
    test = build_splits(cfg, build_kinds(cfg), ("test",), fit=False, progress=False).datasets["test"]
    metrics = evaluate(result.model, test)["retrieval"]
    n_captions = int(test.view_count["caption"].sum())
    assert metrics["caption->image"]["n"] == int((test.view_count["caption"] * test.present[:, 0]).sum())
    assert n_captions > len(test) and "mrv" in metrics["caption->image"]


def test_multi_positive_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="multi_positive must be 'sample' or 'all'"):
        config_from_dict(_raw(multi_positive="every"))
    raw = _raw(multi_positive="all")
    raw["objective"]["name"] = "siglip"
    with pytest.raises(ConfigError, match="objective 'siglip' takes one value"):
        config_from_dict(raw)
    raw = _raw()
    raw["modalities"]["caption"]["multi"] = "yes"
    with pytest.raises(ConfigError, match="multi must be true or false"):
        config_from_dict(raw)
