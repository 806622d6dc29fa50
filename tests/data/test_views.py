"""Several values per modality (1-to-K): manifests with list values, ``sample`` and ``all`` batches."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from omnibind.data.dataset import prepare_dataset
from omnibind.data.kinds.base import create_kind
from omnibind.data.manifest import read_manifest
from omnibind.data.streaming import LazyDataset, StepBatches
from omnibind.data.views import ViewPick, choose_view
from omnibind.errors import DataError


def _kinds(multi: bool = True) -> dict:
    text = create_kind("text")
    text.multi = multi
    return {"vec": create_kind("embedding", {"dim": 2}), "caption": text}


def _manifest(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    {"id": "a", "vec": [1, 0], "caption": ["a one", "a two", "a three"]},
    {"id": "b", "vec": [0, 1], "caption": "b only"},
    {"id": "c", "vec": [1, 1]},
    {"id": "d", "caption": ["d one", "", None, "d two"]},
    {"id": "e", "vec": [2, 2], "caption": []},
]


def test_choose_view_depends_on_seed_epoch_and_id_only() -> None:
    assert choose_view(0, 0, "x", 1) == 0
    picks = {choose_view(s, e, i, 3) for s in range(3) for e in range(3) for i in "abc"}
    assert picks == {0, 1, 2}
    assert choose_view(5, 2, "item-7", 4) == choose_view(5, 2, "item-7", 4)


def test_list_values_are_views_and_absent_values_keep_their_meaning(tmp_path: Path) -> None:
    records = read_manifest(_manifest(tmp_path, ROWS), ["vec", "caption"])
    assert "caption" not in records[4].values  # an empty list is absent
    ds, _ = prepare_dataset(records, _kinds(), progress=False)
    assert ds.view_count["caption"].tolist() == [3, 1, 0, 2, 0]
    assert ds.present[:, 1].tolist() == [True, True, False, True, False]
    first = ds.batch([0, 1, 3])
    assert first.values["caption"] == ["a one", "b only", "d one"] and first.groups is None
    full = ds.batch([0, 1, 3], ViewPick("all"))
    assert full.values["caption"] == ["a one", "b only", "d one", "a two", "a three", "d two"]
    assert full.ids == ["a", "b", "d", "a", "a", "d"]
    assert full.groups.tolist() == [0, 1, 3, 0, 0, 3]
    assert full.present[3:].tolist() == [[False, True]] * 3  # further views: that modality only
    assert torch.equal(full.values["vec"], first.values["vec"])
    views, owner = ds.views("caption")
    assert views == ["a two", "a three", "d two"] and owner.tolist() == [0, 0, 3]
    sub = ds.subset([3, 0])
    assert sub.view_count["caption"].tolist() == [2, 3]
    assert sub.batch([0, 1], ViewPick("all")).values["caption"] == [
        "d one",
        "a one",
        "d two",
        "a two",
        "a three",
    ]


def test_sample_picks_the_value_of_seed_epoch_and_item(tmp_path: Path) -> None:
    records = read_manifest(_manifest(tmp_path, ROWS), ["vec", "caption"])
    ds, _ = prepare_dataset(records, _kinds(), progress=False)
    texts = {"a": ["a one", "a two", "a three"], "b": ["b only"], "d": ["d one", "d two"]}
    for epoch in range(4):
        got = ds.batch([0, 1, 3], ViewPick("sample", seed=3, epoch=epoch)).values["caption"]
        want = [texts[i][choose_view(3, epoch, i, len(texts[i]))] for i in "abd"]
        assert got == want


@pytest.mark.parametrize("mode", ["first", "sample", "all"])
def test_lazy_dataset_batches_equal_prepared_ones(tmp_path: Path, mode: str) -> None:
    records = read_manifest(_manifest(tmp_path, ROWS), ["vec", "caption"])
    kinds = _kinds()
    ds, _ = prepare_dataset(records, kinds, progress=False)
    lazy = LazyDataset(records, kinds)
    pick = ViewPick(mode, seed=1, epoch=2)
    a, b = ds.batch([4, 3, 0, 1], pick), lazy.batch([4, 3, 0, 1], pick)
    assert a.ids == b.ids and a.values["caption"] == b.values["caption"]
    assert torch.equal(a.present, b.present) and torch.equal(a.values["vec"], b.values["vec"])
    assert (a.groups is None) == (b.groups is None)
    if a.groups is not None:
        assert torch.equal(a.groups, b.groups)


def test_sample_is_the_same_whatever_the_number_of_processes(tmp_path: Path) -> None:
    rows = [{"id": f"i{k}", "vec": [k, 1], "caption": [f"{k} x", f"{k} y", f"{k} z"]} for k in range(8)]
    ds, _ = prepare_dataset(
        read_manifest(_manifest(tmp_path, rows), ["vec", "caption"]), _kinds(), progress=False
    )
    one = StepBatches(ds, seed=4, batch_size=4, steps_per_epoch=2, total=6, views="sample")
    for step in range(6):
        parts = [
            StepBatches(ds, 4, 4, 2, 6, rank=r, world=2, views="sample")[step].values["caption"]
            for r in (0, 1)
        ]
        assert parts[0] + parts[1] == one[step].values["caption"]


def test_a_list_for_a_modality_that_is_not_multi_valued_is_an_error(tmp_path: Path) -> None:
    records = read_manifest(_manifest(tmp_path, ROWS[:1]), ["vec", "caption"])
    with pytest.raises(DataError) as err:
        prepare_dataset(records, _kinds(multi=False), progress=False)
    text = str(err.value)
    assert "not multi-valued" in text and "multi: true" in text and "m.jsonl:1" in text
    with pytest.raises(DataError, match="not multi-valued"):
        LazyDataset(records, _kinds(multi=False)).batch([0])
