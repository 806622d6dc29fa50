"""Mining hard negatives: exact nearest targets without the item, its duplicates and its own views."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from omnibind.config import config_from_dict
from omnibind.data.loading import build_kinds, build_splits
from omnibind.data.negatives import Duplicates, NegativeTable, find_duplicates
from omnibind.model import OmniModel
from omnibind.training.mining import Miner, interleave, nearest_targets, training_pairs
from omnibind.training.precision import Precision


def test_nearest_targets_skip_the_item_its_duplicates_and_items_without_the_target() -> None:
    angles = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4])  # item 0's nearest: itself, then 1, 2, 3, 4
    unit = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    has_target = torch.tensor([True, True, False, True, True])  # item 2 has no target value
    duplicates = Duplicates(np.array([0, 1]), np.array([7, 7]), 5)  # items 0 and 1 share a value
    got = nearest_targets(unit, unit, torch.ones(5, dtype=torch.bool), has_target, duplicates, k=2)
    assert got[0].tolist() == [3, 4]
    assert got[1].tolist() == [3, 4]  # 1's nearest are itself and its duplicate 0
    assert got[3].tolist() == [4, 1]
    few = nearest_targets(unit, unit, torch.ones(5, dtype=torch.bool), has_target, duplicates, k=4)
    assert few[0].tolist() == [3, 4, -1, -1]  # fewer candidates than k


def test_interleave_takes_the_pairs_in_turn_each_item_once() -> None:
    a = torch.tensor([[5, 6, 7], [1, -1, -1]])
    b = torch.tensor([[6, 8, 9], [2, 3, -1]])
    assert interleave([a, b], 3).tolist() == [[5, 6, 8], [1, 2, 3]]
    assert interleave([a, b], 5).tolist() == [[5, 6, 8, 7, 9], [1, 2, 3, -1, -1]]


def test_training_pairs_follow_the_objective() -> None:
    mods = {m: {"kind": "text"} for m in ("a", "b", "c")}
    star = config_from_dict({"modalities": mods, "objective": {"name": "infonce", "pairs": "b"}})
    assert training_pairs(star) == [("b", "a"), ("a", "b"), ("b", "c"), ("c", "b")]
    assert len(training_pairs(config_from_dict({"modalities": mods, "objective": {"name": "symile"}}))) == 6


def _views_manifest(tmp_path: Path) -> Path:
    rows = [
        {"id": f"i{k}", "caption": [f"text {k}", f"other words {k}"], "vector": [float(k), 1.0]}
        for k in range(10)
    ]
    rows[4]["caption"] = ["text 4", "text 7"]  # item 4's second view is item 7's first: duplicates
    rows[5]["vector"] = [9.0, 1.0]  # item 5's vector is item 9's: duplicates
    path = tmp_path / "views.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mined_tables_never_hold_the_item_or_its_duplicates(tmp_path: Path) -> None:
    cfg = config_from_dict(
        {
            "modalities": {
                "caption": {"kind": "text", "multi": True, "encoder": {"name": "bag_of_tokens", "width": 8}},
                "vector": {"kind": "embedding", "dim": 2},
            },
            "data": {"source": str(_views_manifest(tmp_path)), "val_fraction": 0, "test_fraction": 0},
            "model": {"dim": 8},
            "objective": {"name": "infonce", "hard_negatives": {"mine_every": 1, "k": 9}},
        }
    )
    data = build_splits(cfg, build_kinds(cfg), wanted=("train",), progress=False).datasets["train"]
    duplicates = find_duplicates(data, batch_size=3)
    twins = {
        tuple(sorted((data.ids[p], data.ids[int(q)])))
        for p, q in zip(*duplicates.of(torch.arange(10)), strict=True)
    }
    assert twins - {(i, i) for i in data.ids} == {("i4", "i7"), ("i5", "i9")}
    torch.manual_seed(0)
    table = NegativeTable.empty(len(data), duplicates)
    miner = Miner(table, 1, 9, training_pairs(cfg), 4, Precision("fp32", torch.device("cpu")))
    stats = miner.mine(OmniModel(cfg), data, epoch=1)
    assert table.mined_epoch == 1 and stats["mining/negatives_per_item"] > 0
    for i, row in enumerate(table.table.tolist()):
        found = {data.ids[j] for j in row if j >= 0}
        assert data.ids[i] not in found
        pair = {"i4": "i7", "i7": "i4", "i5": "i9", "i9": "i5"}.get(data.ids[i])
        assert pair not in found, (data.ids[i], found)
        assert len(found) == 9 - (pair is not None)  # every other item, but the twin
