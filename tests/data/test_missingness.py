"""``data.missing``: config validation that names the key, and missingness that hits the right class, split
and share, deterministically, without emptying an item or changing records in place."""

from __future__ import annotations

from typing import Any

import pytest

from omnibind.config import MissingConfig, config_from_dict
from omnibind.data.loading import build_kinds, build_splits
from omnibind.data.missingness import apply_missing, choose_missing, field_value
from omnibind.data.record import Record
from omnibind.errors import ConfigError


def _raw(missing: Any) -> dict:
    return {
        "modalities": {
            "image": {"kind": "image", "size": 16},
            "table": {"kind": "tabular", "columns": ["width", "height", "x", "y"]},
        },
        "data": {"source": "builtin:shapes?n=400&image_size=16", "missing": missing},
        "model": {"dim": 8},
    }


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ([{"modality": "sound", "rate": 0.5}], r"data.missing\[0\].modality: 'sound' is not a declared"),
        ([{"modality": "imag", "rate": 0.5}], r"did you mean 'image'"),
        ([{"modality": "image", "rate": 1.5}], r"data.missing\[0\].rate must be in \(0, 1\]"),
        ([{"modality": "image", "rate": 0}], r"data.missing\[0\].rate must be in \(0, 1\]"),
        ([{"modality": "image"}], r"data.missing\[0\] needs 'rate'"),
        ([{"modality": "image", "rate": 0.5, "splits": ["training"]}], r"data.missing\[0\].splits: unknown"),
        ([{"modality": "image", "rate": 0.5, "splits": []}], r"data.missing\[0\].splits must be a non-empty"),
        ([{"modality": "image", "rate": 0.5, "vale": 1}], r"unknown config key 'data.missing\[0\].vale'"),
        ([{"modality": "image", "rate": 0.5, "field": ""}], r"data.missing\[0\].field must name"),
        ([{"modality": "image", "rate": "often"}], r"'data.missing\[0\].rate' expects float"),
        ({"modality": "image"}, r"data.missing must be a list"),
        (["image"], r"data.missing\[0\] must be a mapping"),
    ],
)
def test_bad_settings_name_the_key(missing: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(_raw(missing))


def test_a_setting_round_trips_and_numbers_become_class_strings() -> None:
    cfg = config_from_dict(_raw([{"modality": "image", "rate": 0.8, "value": 3}]))
    assert cfg.data.missing == [MissingConfig("image", 0.8, "3", "label", ["train", "val"])]
    assert config_from_dict(cfg.to_dict()).data.missing == cfg.data.missing
    assert config_from_dict(_raw(None)).data.missing == []


def test_training_items_of_one_class_lose_the_modality_at_the_rate() -> None:
    setting = {"modality": "image", "rate": 0.8, "value": "red", "field": "colour", "splits": ["train"]}
    cfg = config_from_dict(_raw([setting]))
    splits = build_splits(cfg, build_kinds(cfg), progress=False)
    train = splits.datasets["train"]
    red = [i for i, f in enumerate(train.facts) if f is not None and f["colour"] == "red"]
    lost = [i for i in red if not train.present[i, 0]]
    assert len(lost) == round(0.8 * len(red)) and len(red) > 50
    others = [i for i in range(len(train)) if i not in red]
    assert bool(train.present[others, 0].all())  # no other colour lost its image
    assert bool(splits.datasets["test"].present[:, 0].all())  # test split as collected
    again = build_splits(cfg, build_kinds(cfg), progress=False).datasets["train"]
    assert again.ids == train.ids and bool((again.present == train.present).all())
    cfg.data.split_seed = 1
    moved = build_splits(cfg, build_kinds(cfg), progress=False).datasets["train"]
    assert not bool((moved.present == train.present).all())


def _records() -> list[Record]:
    out = []
    for i in range(20):
        values = {"a": i, "b": i} if i < 16 else {"a": i}  # the last four have `a` only
        out.append(Record(id=str(i), values=values, label=i % 2, facts={"mark": i % 2, "tone": i // 10}))
    return out


def test_a_sole_modality_is_never_removed_and_records_are_copied() -> None:
    records = _records()
    every = MissingConfig("a", 1.0, splits=["train"])
    out = apply_missing({"train": records}, [every], seed=0)["train"]
    assert [("a" in r.values) for r in out] == [False] * 16 + [True] * 4
    assert all("a" in r.values for r in records)  # the input is untouched
    assert choose_missing(records, MissingConfig("a", 0.5, value="1"), 0) == sorted(
        choose_missing(records, MissingConfig("a", 0.5, value="1"), 0)
    )
    chosen = choose_missing(records, MissingConfig("a", 0.5, value="1"), 0)
    assert len(chosen) == 4 and all(records[i].label == 1 and i < 16 for i in chosen)


def test_fields_read_like_task_labels() -> None:
    r = Record(id="x", values={}, label=3, facts={"mark": 1, "tone": 0}, metadata={"speaker": "theo"})
    assert field_value(r, "label") == "3"
    assert field_value(r, "mark") == "1"
    assert field_value(r, "speaker") == "theo"
    assert field_value(r, "mark + tone") == "mark=1,tone=0"
    assert field_value(r, "nothing") is None
    chosen = choose_missing(
        [Record(id=str(i), values={"a": 0, "b": 0}, facts={"mark": i % 2, "tone": 0}) for i in range(10)],
        MissingConfig("a", 1.0, value="mark=1,tone=0", field="mark+tone"),
        0,
    )
    assert chosen == [1, 3, 5, 7, 9]
