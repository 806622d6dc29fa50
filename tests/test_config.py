"""Config loading, validation with nearest-key suggestions, and dotted overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from omnibind.config import apply_overrides, config_from_dict, load_config
from omnibind.errors import ConfigError

BASE = {
    "modalities": {"image": {"kind": "image", "size": 16}, "caption": {"kind": "text"}},
    "objective": {"name": "symile", "negatives": "n"},
    "train": {"epochs": 2},
}


def test_round_trip_to_dict() -> None:
    cfg = config_from_dict(BASE)
    again = config_from_dict(cfg.to_dict())
    assert again == cfg
    assert cfg.modalities["image"].options == {"size": 16}
    assert cfg.objective.options == {"negatives": "n"}


def test_unknown_top_level_key_suggests_nearest() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'.*did you mean 'train'"):
        config_from_dict({**BASE, "trian": {}})


def test_unknown_section_key_names_dotted_path() -> None:
    with pytest.raises(ConfigError, match=r"'train\.lr_rate'.*did you mean 'lr'"):
        config_from_dict({**BASE, "train": {"lr_rate": 1.0}})


def test_unknown_kind_option() -> None:
    bad = {**BASE, "modalities": {"image": {"kind": "image", "sise": 16}}}
    with pytest.raises(ConfigError, match=r"modalities\.image.*'sise'.*did you mean 'size'"):
        config_from_dict(bad)


def test_unknown_kind_and_objective() -> None:
    with pytest.raises(ConfigError, match="did you mean 'image'"):
        config_from_dict({**BASE, "modalities": {"x": {"kind": "imag"}}})
    with pytest.raises(ConfigError, match="did you mean 'symile'"):
        config_from_dict({**BASE, "objective": {"name": "symil"}})


def test_overrides_parse_yaml_scalars(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    cfg = load_config(path, ["train.lr=3e-4", "train.epochs=7", "modalities.image.size=8", "data.root=x"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.epochs == 7
    assert cfg.modalities["image"].options["size"] == 8
    assert cfg.data.root == "x"


def test_override_of_missing_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    with pytest.raises(ConfigError, match="did you mean 'batch_size'"):
        load_config(path, ["train.bacth_size=3"])
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides(BASE, ["train.lr"])


def test_manifest_path_resolves_against_config_folder(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, "data": {"source": "items.jsonl"}}))
    assert load_config(path).data.source == str(tmp_path / "items.jsonl")


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("modalities: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
