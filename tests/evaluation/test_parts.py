"""``omnibind embed RUN --out DIR``: parts written atomically, 2 processes write what 1 writes, a rerun skips
finished parts, and SIGKILL at random moments loses nothing (every item once at the end)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from omnibind.cli.main import app
from omnibind.config import config_from_dict
from omnibind.index import Index, SearchError
from omnibind.training.trainer import train
from tests.helpers import kill_tree, tiny_shapes_config

ROOT = Path(__file__).resolve().parents[2]
DATA = "builtin:shapes?n=600&missing=0.3&image_size=16&seconds=0.25"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tiny_shapes_config(n=200, epochs=1, threads=1, max_steps=3)
    raw.pop("eval")
    out = tmp_path_factory.mktemp("parts") / "run"
    train(config_from_dict(raw), out)
    return out


def _rows(folder: Path) -> dict[str, dict]:
    listing = json.loads((folder / "parts.json").read_text())
    rows: dict[str, dict] = {}
    for part in listing["parts"]:
        for row in pq.read_table(folder / part["file"]).to_pylist():
            assert row["id"] not in rows, f"{row['id']} is in two parts"
            rows[row["id"]] = row
    assert len(rows) == listing["items"] == sum(p["items"] for p in listing["parts"])
    return rows


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _embed_cmd(run: Path, out: Path, nproc: int, data: str = DATA, part_size: int = 50) -> list[str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    args = [
        "-m",
        "omnibind",
        "embed",
        str(run),
        "--data",
        data,
        "--out",
        str(out),
        "--part-size",
        str(part_size),
    ]
    return (launcher if nproc > 1 else [sys.executable]) + args


def test_two_processes_write_what_one_writes(run: Path, tmp_path: Path) -> None:
    one = subprocess.run(_embed_cmd(run, tmp_path / "one", 1), env=_env(), capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    assert "embedded 600 items in 12 parts" in one.stdout
    two = subprocess.run(_embed_cmd(run, tmp_path / "two", 2), env=_env(), capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("embedded 600 items") == 1  # rank 0 alone reports
    names = sorted(p.name for p in (tmp_path / "two").glob("part-*.parquet"))
    assert "part-00001-00001.parquet" in names and "part-00000-00000.parquet" in names
    a, b = _rows(tmp_path / "one"), _rows(tmp_path / "two")
    assert a.keys() == b.keys()
    for key, row in a.items():
        for m in ("image", "caption", "sound", "table"):
            if row[m] is None:
                assert b[key][m] is None
            else:
                np.testing.assert_allclose(np.array(row[m]), np.array(b[key][m]), rtol=0, atol=1e-6)


def test_parts_match_the_single_file_and_a_rerun_skips_them(run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["embed", str(run), "--data", DATA, "--out", str(tmp_path / "one.parquet")])
    assert res.exit_code == 0, res.output
    single = {r["id"]: r for r in pq.read_table(tmp_path / "one.parquet").to_pylist()}
    res = runner.invoke(
        app, ["embed", str(run), "--data", DATA, "--out", str(tmp_path / "p"), "--part-size", "100"]
    )
    assert res.exit_code == 0, res.output
    parts = _rows(tmp_path / "p")
    assert parts.keys() == single.keys()
    for key, row in single.items():
        assert parts[key]["split"] == row["split"] and parts[key]["label"] == row["label"]
        if row["image"] is not None:
            np.testing.assert_allclose(parts[key]["image"], row["image"], atol=1e-6)
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "p").glob("part-*")}
    res = runner.invoke(
        app, ["embed", str(run), "--data", DATA, "--out", str(tmp_path / "p"), "--part-size", "100"]
    )
    assert res.exit_code == 0, res.output
    assert stamps == {p.name: p.stat().st_mtime_ns for p in (tmp_path / "p").glob("part-*")}  # none rewritten
    cut = tmp_path / "p" / "part-00000-00002.parquet"  # a part cut short (a full disk, a bad copy)
    cut.write_bytes(cut.read_bytes()[:500])
    with pytest.raises(SearchError, match="part-00000-00002.parquet is damaged .*rerun `omnibind embed`"):
        Index.create(tmp_path / "ix", run).add_parts(tmp_path / "p")
    with pytest.warns(UserWarning, match="part-00000-00002.parquet is damaged .*embedding its items again"):
        res = runner.invoke(
            app, ["embed", str(run), "--data", DATA, "--out", str(tmp_path / "p"), "--part-size", "100"]
        )
    assert res.exit_code == 0, res.output
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "p").glob("part-*")}
    assert [n for n in after if after[n] != stamps[n]] == [cut.name]  # only the damaged part was redone
    assert _rows(tmp_path / "p").keys() == single.keys()
    res = runner.invoke(
        app, ["embed", str(run), "--data", DATA, "--out", str(tmp_path / "p"), "--part-size", "50"]
    )
    assert res.exit_code != 0 and "holds embedding parts of another run (differs in part_size" in res.output


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(run: Path, tmp_path: Path) -> None:
    """Five 2-process runs SIGKILLed (every process) at random moments while parts are being written,
    then one run to the end: the parts hold every item once."""
    # 300 parts of 20 items: after a few seconds of start-up the parts come at ~150/s on 2 cores, so the
    # kills must be counted in parts and land within milliseconds (with 100-item parts and a 0.3 s wait,
    # five kills once reached the end of the run, and the test lost its point)
    data = "builtin:shapes?n=6000&missing=0.3&image_size=16&seconds=0.25"
    total = 300
    out = tmp_path / "parts"
    rng = random.Random(0)
    counts = []
    for _ in range(5):
        before = len(list(out.glob("part-*.parquet"))) if out.exists() else 0
        target = before + rng.randint(1, 30)  # kill after a few more parts, a random moment into the next
        job = subprocess.Popen(
            _embed_cmd(run, out, 2, data, 6000 // total),
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while len(list(out.glob("part-*.parquet"))) < target:
            assert job.poll() is None and time.monotonic() < deadline, "the run ended before it was killed"
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.01))
        assert job.poll() is None, "the run ended before it was killed"
        kill_tree(job.pid)
        job.wait()
        counts.append(len(list(out.glob("part-*.parquet"))))
    assert counts[-1] < total, counts
    done = subprocess.run(
        _embed_cmd(run, out, 2, data, 6000 // total), env=_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(_rows(out)) == 6000
    print(f"part files after each kill: {counts}")


def test_index_build_from_embeddings_equals_index_build_from_data(run: Path, tmp_path: Path) -> None:
    from omnibind.index import Index

    runner = CliRunner()
    parts = tmp_path / "parts"
    res = runner.invoke(app, ["embed", str(run), "--data", DATA, "--out", str(parts), "--part-size", "100"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app, ["index", "build", str(run), "--from-embeddings", str(parts), "--out", str(tmp_path / "a")]
    )
    assert res.exit_code == 0, res.output
    assert "committed 600 items" in res.output
    res = runner.invoke(app, ["index", "build", str(run), "--data", DATA, "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    a, b = Index.open(tmp_path / "a"), Index.open(tmp_path / "b")
    assert a.counts() == b.counts() and len(a) == 600
    for query in ({"caption": "a red square"}, {"caption": "a small blue circle"}):
        for target in ("image", "sound", "table"):
            ha = [(h.id, round(h.score, 5)) for h in a.search(query, target=target, k=10).hits]
            hb = [(h.id, round(h.score, 5)) for h in b.search(query, target=target, k=10).hits]
            assert ha == hb, target
            ra, rb = a.search(query, target=target, k=3), b.search(query, target=target, k=3)
            assert [h.metadata for h in ra.hits] == [h.metadata for h in rb.hits]


def test_index_build_from_unfinished_or_foreign_parts_is_refused(run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "parts").mkdir()
    res = runner.invoke(
        app,
        [
            "index",
            "build",
            str(run),
            "--from-embeddings",
            str(tmp_path / "parts"),
            "--out",
            str(tmp_path / "i"),
        ],
    )
    assert res.exit_code != 0 and "has no parts.json: the embedding has not finished" in res.output
    assert not (tmp_path / "i").exists()
    res = runner.invoke(app, ["index", "build", str(run), "--out", str(tmp_path / "i")])
    assert res.exit_code != 0 and "exactly one of --data DATA and --from-embeddings DIR" in res.output
