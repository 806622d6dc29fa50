"""``omnibind index build|add|delete|compact`` and ``omnibind search``; SIGKILL during ``index add``."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from omnibind.cli.main import app
from omnibind.config import config_from_dict
from omnibind.index import Index
from omnibind.training.trainer import train
from tests.helpers import tiny_shapes_config

SHAPES = "builtin:shapes?n={n}&missing=0.2&image_size=16&seconds=0.25&seed={seed}"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    train(config_from_dict(tiny_shapes_config("infonce", n=96, epochs=1, threads=1)), out)
    return out


def _manifest(path: Path, prefix: str, n: int) -> Path:
    rng = random.Random(prefix)
    with path.open("w") as f:
        for i in range(n):
            row = {
                "id": f"{prefix}-{i:06d}",
                "caption": f"a {rng.choice(['red', 'blue', 'green'])} {rng.choice(['circle', 'square'])} {i}",
                "table": {
                    "width": rng.random(),
                    "height": rng.random(),
                    "x": rng.random(),
                    "y": rng.random(),
                },
            }
            f.write(json.dumps(row) + "\n")
    return path


def test_build_add_search_delete_compact(run, tmp_path):
    runner = CliRunner()
    index = tmp_path / "index"
    r = runner.invoke(
        app, ["index", "build", str(run), "--data", SHAPES.format(n=30, seed=1), "--out", str(index)]
    )
    assert r.exit_code == 0, r.output
    assert "committed 30 items" in r.output and "indexed 30 items" in r.output
    r = runner.invoke(
        app, ["index", "add", str(index), "--data", str(_manifest(tmp_path / "m.jsonl", "m", 5))]
    )
    assert r.exit_code == 0, r.output
    assert "the index holds 35" in r.output
    r = runner.invoke(
        app, ["search", str(index), "--text", "a red circle", "-k", "3", "--where", "colour=red"]
    )
    assert r.exit_code == 0, r.output
    assert "3 results" in r.output and "colour=red" in r.output
    r = runner.invoke(app, ["index", "delete", str(index), "m-000000", "m-000001"])
    assert r.exit_code == 0 and "the index holds 33" in r.output
    r = runner.invoke(app, ["index", "compact", str(index)])
    assert r.exit_code == 0 and "33 items" in r.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["search", "{tmp}", "--text", "x"], "is not an omnibind index"),
        (["search", "{index}", "--text", "x", "--target", "smell"], "unknown target modality 'smell'"),
        (["search", "{index}", "--text", "x", "-k", "0"], "k must be an integer"),
        (["search", "{index}", "--like", "nope"], "no item with id 'nope'"),
        (["index", "delete", "{index}", "nope"], "no item with id 'nope'"),
        (["search", "{index}", "--text", "x", "--where", "colour"], "cannot read the filter"),
    ],
)
def test_cli_errors_are_one_line(run, tmp_path, args, message):
    runner = CliRunner()
    index = tmp_path / "index"
    Index.create(index, run)
    r = runner.invoke(app, [a.format(tmp=tmp_path, index=index) for a in args])
    assert r.exit_code == 2, r.output
    assert message in r.output and "Traceback" not in r.output


@pytest.mark.slow
def test_sigkill_during_add_loses_no_acknowledged_item(run, tmp_path):
    """Kill ``omnibind index add`` at random moments; acknowledged = counted in a printed "committed" line."""
    index = tmp_path / "index"
    Index.create(index, run)
    batch, n = 200, 6000
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rng = random.Random(0)
    expected: set[str] = set()
    for round_ in range(8):
        manifest = _manifest(tmp_path / f"r{round_}.jsonl", f"r{round_}", n)
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "omnibind.cli.main",
                "index",
                "add",
                str(index),
                "--data",
                str(manifest),
                "--batch-size",
                str(batch),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        acknowledged = 0
        kill_after = rng.uniform(0.0, 2.0)
        start = None
        assert proc.stdout is not None
        for line in proc.stdout:  # wait for a first commit, then kill at a random later moment
            if line.startswith("committed"):
                acknowledged = int(line.split()[1])
                start = start or time.monotonic()
                if time.monotonic() - start >= kill_after:
                    break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        ix = Index.open(index)
        mine = [i for i in ix.ids() if i.startswith(f"r{round_}-")]
        ids = [f"r{round_}-{i:06d}" for i in range(n)]
        # every acknowledged item is there; what is there is whole batches, in order (no partial batch)
        assert len(mine) >= acknowledged and len(mine) % batch == 0 or len(mine) == n
        assert sorted(mine) == ids[: len(mine)]
        expected |= set(mine)
        assert set(ix.ids()) == expected
        for item in rng.sample(mine, 5):
            vec = ix.embedding(item, "caption")
            assert vec is not None and ix.get(item)["modalities"]["caption"]["value"]
            hit = ix.search(vec, target="caption", k=1).hits[0]
            assert hit.score == pytest.approx(float(vec @ vec), abs=1e-5)
    # the next add works
    ix = Index.open(index)
    ix.add_embeddings(["after"], {"caption": np.eye(16, dtype=np.float32)[0]})
    assert "after" in Index.open(index).ids()
