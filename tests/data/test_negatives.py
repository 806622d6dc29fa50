"""The negatives table: the step's negatives (each once, none from the batch), their layout across
processes, the duplicate mask, and the ``negatives`` column in manifests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from omnibind.data.manifest import read_manifest
from omnibind.data.negatives import Duplicates, NegativeTable
from omnibind.errors import DataError


def _table() -> NegativeTable:
    duplicates = Duplicates(np.array([0, 7, 3, 5]), np.array([1, 1, 2, 2]), 10)  # 0~7 and 3~5
    table = torch.tensor([[7, 8], [2, 9], [3, 8], [9, -1], [-1, -1], [6, 1], [0, 0], [5, 5], [1, 2], [4, 4]])
    return NegativeTable(table, duplicates)


def test_step_negatives_are_each_once_and_never_batch_items() -> None:
    negatives, rows = _table().step(torch.tensor([0, 1, 2, 3]))
    assert negatives.tolist() == [7, 8, 9]  # 2 and 3 are in the batch; 8 and 9 listed twice
    assert rows is not None and rows.count == rows.width == 3
    assert rows.allowed.tolist() == [
        [False, True, True],  # 7 is item 0's duplicate
        [True, True, True],
        [True, True, True],
        [True, True, True],
    ]
    assert _table().step(torch.tensor([4]))[1] is None  # no negatives: the plain step


def test_processes_share_out_the_step_negatives() -> None:
    table = _table()
    chunk = torch.tensor([0, 1, 2, 3, 5, 6])
    whole, one = table.step(chunk)
    parts = [table.step(chunk, rank, 2) for rank in (0, 1)]
    assert parts[0][1] is not None and parts[1][1] is not None
    assert torch.equal(parts[0][1].allowed, parts[1][1].allowed)  # one global mask on every rank
    width = parts[0][1].width
    assert width == max(len(p[0]) for p in parts)
    real = [c for r, (items, _) in enumerate(parts) for c in range(r * width, r * width + len(items))]
    assert torch.cat([p[0] for p in parts]).tolist() == whole.tolist()  # rank 0's first mentions first
    assert one is not None and torch.equal(parts[0][1].allowed[:, real], one.allowed)
    assert not parts[0][1].allowed[:, [c for c in range(2 * width) if c not in real]].any()  # padding


def test_state_dict_round_trip() -> None:
    table = _table()
    table.mined_epoch, table.rounds = 3, [{"mining/seconds": 1.0}]
    other = NegativeTable.empty(10, table.duplicates)
    other.load_state_dict(table.state_dict())
    assert torch.equal(other.table, table.table) and other.mined_epoch == 3 and other.rounds == table.rounds


def test_manifest_negatives_column_in_jsonl_csv_and_parquet(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(
        json.dumps({"id": 1, "text": "x", "negatives": [2, "b"]})
        + "\n"
        + json.dumps({"id": 2, "text": "y"})
        + "\n"
    )
    records = read_manifest(tmp_path / "a.jsonl", ["text"])
    assert records[0].negatives == ["2", "b"] and records[1].negatives is None
    (tmp_path / "b.csv").write_text('id,text,negatives\n1,x,2|3\n2,y,"[""1""]"\n3,z,\n')
    assert [r.negatives for r in read_manifest(tmp_path / "b.csv", ["text"])] == [["2", "3"], ["1"], None]
    pq.write_table(
        pa.table({"id": [1, 2], "text": ["x", "y"], "negatives": [[2], []]}), tmp_path / "c.parquet"
    )
    assert [r.negatives for r in read_manifest(tmp_path / "c.parquet", ["text"])] == [["2"], None]


def test_manifest_negatives_that_are_not_ids_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(json.dumps({"id": "q", "text": "x", "negatives": [None, "b"]}) + "\n")
    with pytest.raises(
        DataError, match=r"a.jsonl:1, id='q', field 'negatives': expected 'negatives' to be a list"
    ):
        read_manifest(tmp_path / "a.jsonl", ["text"])
