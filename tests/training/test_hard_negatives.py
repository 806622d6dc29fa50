"""Training with hard negatives: bit-identical when none are used, mining every E epochs, exact resume,
micro-batches, the ``negatives`` column and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from omnibind.config import config_from_dict
from omnibind.data.loading import build_kinds, build_splits
from omnibind.data.negatives import column_table, find_duplicates
from omnibind.data.streaming import StepBatches
from omnibind.errors import ConfigError, DataError, OmnibindError
from omnibind.training.trainer import train
from tests.helpers import Crash, tiny_shapes_config


def _raw(objective: str = "infonce", epochs: int = 3, hard: dict | None = None, **train_opts: object) -> dict:
    raw = tiny_shapes_config(objective, n=160, epochs=epochs, threads=1, **train_opts)
    del raw["modalities"]["sound"]
    raw["eval"]["zero_shot"] = []
    if hard is not None:
        raw["objective"]["hard_negatives"] = hard
    return raw


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _mining(run: Path) -> list[dict]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [x for x in lines if "mining/seconds" in x]


def test_configured_but_not_yet_mined_trains_bit_identically(tmp_path: Path) -> None:
    """Before the first round (and without hard negatives) the step is the plain one, bit for bit."""
    train(config_from_dict(_raw(epochs=2)), tmp_path / "plain")
    train(config_from_dict(_raw(epochs=2, hard={"mine_every": 5, "k": 2})), tmp_path / "later")
    assert _same(_weights(tmp_path / "plain"), _weights(tmp_path / "later"))
    assert _mining(tmp_path / "later") == []


def test_mining_runs_every_e_epochs_and_is_logged(tmp_path: Path) -> None:
    result = train(config_from_dict(_raw(epochs=5, hard={"mine_every": 2, "k": 3})), tmp_path / "run")
    rounds = _mining(tmp_path / "run")
    assert [r["mining/epoch"] for r in rounds] == [2.0, 4.0]
    per_epoch = result.steps // 5
    assert [r["step"] for r in rounds] == [2 * per_epoch + 1, 4 * per_epoch + 1]  # before the epoch's first
    assert all(r["mining/seconds"] > 0 and 0 < r["mining/negatives_per_item"] <= 3 for r in rounds)
    assert result.timing["mining_seconds"] == pytest.approx(sum(r["mining/seconds"] for r in rounds))
    train(config_from_dict(_raw(epochs=5)), tmp_path / "plain")
    assert not _same(_weights(tmp_path / "run"), _weights(tmp_path / "plain"))


@pytest.mark.parametrize(("objective", "crash"), [("infonce", 7), ("infonce", 5), ("symile", 7)])
def test_resume_uses_the_mined_negatives(tmp_path: Path, objective: str, crash: int) -> None:
    """A crash after a round (checkpoint at step 6 holds the table) or just after an epoch's checkpoint
    (step 4: the round is mined again from the same weights) resumes to the uninterrupted weights."""
    hard = {"mine_every": 1, "k": 2}
    train(config_from_dict(_raw(objective, hard=hard)), tmp_path / "full")
    cfg = config_from_dict(_raw(objective, hard=hard, checkpoint_every=2))
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "crashed", callbacks=[Crash(at=crash)])
    train(config_from_dict(_raw(objective, hard=hard, checkpoint_every=2)), tmp_path / "crashed", resume=True)
    assert _same(_weights(tmp_path / "full"), _weights(tmp_path / "crashed"))
    assert [r["mining/epoch"] for r in _mining(tmp_path / "crashed")] == [1.0, 2.0]


def test_streamed_data_with_a_worker_uses_each_new_table(tmp_path: Path) -> None:
    """``data.cache: none`` and a worker process: after each round the loader restarts with the new table
    (a prefetched batch of the old one would change the run), and the weights are the in-memory ones."""
    hard = {"mine_every": 1, "k": 2}
    train(config_from_dict(_raw(hard=hard)), tmp_path / "memory")
    raw = _raw(hard=hard, workers=1)
    raw["data"]["cache"] = "none"
    train(config_from_dict(raw), tmp_path / "streamed")
    assert _same(_weights(tmp_path / "memory"), _weights(tmp_path / "streamed"))
    assert len(_mining(tmp_path / "streamed")) == 2


@pytest.mark.parametrize("objective", ["infonce", "siglip", "symile"])
def test_micro_batches_with_hard_negatives_give_the_same_weights(tmp_path: Path, objective: str) -> None:
    hard = {"mine_every": 1, "k": 2}
    raw = _raw(objective, epochs=2, hard=hard, precision="fp64")
    train(config_from_dict(raw), tmp_path / "whole")
    raw["train"]["micro_batch_size"] = 8
    train(config_from_dict(raw), tmp_path / "micro")
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "micro")
    for key in a:  # relative to the tensor's largest value, as in test_gradcache.py
        scale = a[key].abs().max().clamp_min(1e-12)
        assert float((a[key] - b[key]).abs().max() / scale) <= 1e-9, key


def test_hard_negative_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="did you mean 'mine_every'"):
        config_from_dict(_raw(hard={"mine_evry": 1}))
    with pytest.raises(ConfigError, match="hard_negatives.k must be at least 1"):
        config_from_dict(_raw(hard={"k": 0}))
    with pytest.raises(ConfigError, match="expects int"):
        config_from_dict(_raw(hard={"mine_every": "often"}))


def _manifest(tmp_path: Path, negatives: dict[str, object], text: dict[str, str] | None = None) -> Path:
    rows = []
    for i in range(12):
        rid = f"item{i}"
        row = {"id": rid, "caption": (text or {}).get(rid, f"caption number {i}"), "vector": [float(i), 1.0]}
        if rid in negatives:
            row["negatives"] = negatives[rid]
        if i == 3:
            del row["vector"]  # an item without one modality
        rows.append(row)
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _column_raw(path: Path) -> dict:
    return {
        "modalities": {
            "caption": {"kind": "text", "encoder": {"name": "bag_of_tokens", "width": 8, "buckets": 64}},
            "vector": {"kind": "embedding", "dim": 2},
        },
        "data": {"source": str(path), "val_fraction": 0, "test_fraction": 0},
        "model": {"dim": 8},
        "train": {"epochs": 1, "batch_size": 4, "progress": False, "threads": 1},
    }


def test_an_unknown_negative_id_stops_before_anything_is_written(tmp_path: Path) -> None:
    path = _manifest(tmp_path, {"item2": ["item5", "item77"]})
    with pytest.raises(DataError) as err:
        train(config_from_dict(_column_raw(path)), tmp_path / "run")
    message = str(err.value)
    assert "items.jsonl:3" in message and "id='item2'" in message and "field 'negatives'" in message
    assert "'item77'" in message and "not an item of the training split" in message
    assert not (tmp_path / "run").exists()


def test_own_id_and_column_with_mining_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="lists the item itself"):
        train(config_from_dict(_column_raw(_manifest(tmp_path, {"item1": ["item1"]}))), tmp_path / "a")
    raw = _column_raw(_manifest(tmp_path, {"item1": ["item2"]}))
    raw["objective"] = {"name": "infonce", "hard_negatives": {"mine_every": 1}}
    with pytest.raises(OmnibindError, match="choose one"):
        train(config_from_dict(raw), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_bad_negatives_values_name_the_record(tmp_path: Path) -> None:
    raw = _column_raw(_manifest(tmp_path, {"item4": {"not": "a list"}}))
    with pytest.raises(DataError, match=r"items.jsonl:5, id='item4', field 'negatives'.*list of item ids"):
        train(config_from_dict(raw), tmp_path / "run")


def test_column_negatives_join_the_batches_with_duplicates_masked(tmp_path: Path) -> None:
    """item6 and item7 have the same caption: item7 is never scored as a negative of item6's row."""
    text = {"item7": "caption number 6"}
    path = _manifest(tmp_path, {"item6": ["item7", "item3"], "item0": ["item6", "item3"]}, text)
    cfg = config_from_dict(_column_raw(path))
    train_set = build_splits(cfg, build_kinds(cfg), wanted=("train",), progress=False).datasets["train"]
    table = column_table(train_set.records, find_duplicates(train_set))
    assert table is not None and table.table.shape == (12, 2)
    steps = StepBatches(train_set, 0, 4, 3, 3, negatives=table)
    chunk = steps.global_indices(0)
    batch = steps[0]
    ids = batch.ids
    assert batch.negatives is not None and len(ids) == 4 + batch.negatives.count
    assert len(set(ids)) == len(ids)  # a negative already in the batch is not added again
    for row, item in enumerate(chunk.tolist()):
        for col, nid in enumerate(ids[4:]):
            twin = {train_set.ids[item], nid} == {"item6", "item7"}
            assert bool(batch.negatives.allowed[row, col]) is not twin
    result = train(cfg, tmp_path / "run")
    assert result.steps == 3


def test_torchrun_local_loss_and_micro_batches_accept_the_column(tmp_path: Path) -> None:
    """The column with objective.local_loss on one process is the plain run (local_loss is a no-op)."""
    path = _manifest(tmp_path, {"item6": ["item7", "item3"], "item0": ["item6"]})
    raw = _column_raw(path)
    train(config_from_dict(raw), tmp_path / "a")
    raw["objective"] = {"name": "infonce", "local_loss": True}
    train(config_from_dict(raw), tmp_path / "b")
    assert _same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
