"""The trainer: determinism, exact resume (after a crash and after SIGKILL), early stopping, bad data."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from omnibind.config import config_from_dict
from omnibind.errors import DataError, OmnibindError
from omnibind.training.trainer import train
from tests.helpers import Crash, tiny_shapes_config


def _cfg(**train_opts: object):
    return config_from_dict(tiny_shapes_config(n=160, epochs=3, threads=1, **train_opts))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_same_seed_same_weights_and_run_layout(tmp_path: Path) -> None:
    r1 = train(_cfg(), tmp_path / "a")
    r2 = train(_cfg(), tmp_path / "b")
    _assert_same(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert r1.steps == r2.steps == 3 * (128 // 32)
    for name in ("config.yaml", "metrics.jsonl", "checkpoints/checkpoint.pt", "model/config.json"):
        assert (tmp_path / "a" / name).exists(), name
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss" in x for x in lines) and any("val/mean_r@1" in x for x in lines)
    assert {"items_per_s", "data_wait", "lr", "logit_scale"} <= set(lines[0])


def test_resume_after_a_crash_reaches_the_same_weights(tmp_path: Path) -> None:
    train(_cfg(), tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(checkpoint_every=2), tmp_path / "crashed", callbacks=[Crash(at=7)])
    assert not (tmp_path / "crashed" / "model").exists()
    train(_cfg(checkpoint_every=2), tmp_path / "crashed", resume=True)
    _assert_same(_weights(tmp_path / "full"), _weights(tmp_path / "crashed"))
    steps = [json.loads(x)["step"] for x in (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps), "the resumed log continues, without repeated steps"


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(tmp_path: Path) -> None:
    train(_cfg(), tmp_path / "a")
    before = _weights(tmp_path / "a")
    with pytest.raises(OmnibindError, match="already holds a run"):
        train(_cfg(), tmp_path / "a")
    _assert_same(before, _weights(tmp_path / "a"))
    with pytest.raises(OmnibindError, match="no checkpoint"):
        train(_cfg(), tmp_path / "b", resume=True)


def test_early_stopping_keeps_the_best_model(tmp_path: Path) -> None:
    cfg = _cfg(eval_every=1, early_stopping_metric="val/mean_r@1", early_stopping_patience=1)
    cfg.train.epochs = 30
    result = train(cfg, tmp_path / "a")
    assert result.stopped_early
    assert result.steps < 30 * 4


def test_bad_record_stops_before_anything_is_written(tmp_path: Path) -> None:
    manifest = tmp_path / "items.jsonl"
    rows = [
        {"id": str(i), "caption": f"item {i}", "table": {"width": i, "height": 1.0, "x": 0.1, "y": 0.2}}
        for i in range(40)
    ]
    rows[7]["table"]["width"] = float("nan")
    manifest.write_text("\n".join(json.dumps(r) for r in rows))
    raw = tiny_shapes_config()
    raw["modalities"] = {k: raw["modalities"][k] for k in ("caption", "table")}
    raw["data"] = {"source": str(manifest)}
    raw["eval"] = {}
    with pytest.raises(DataError, match=r"items\.jsonl:8.*id='7'.*table"):
        train(config_from_dict(raw), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    raw["data"]["on_error"] = "skip"
    train(config_from_dict(raw), tmp_path / "run")
    skipped = [json.loads(x) for x in (tmp_path / "run" / "skipped.jsonl").read_text().splitlines()]
    assert [s["id"] for s in skipped] == ["7"] and skipped[0]["field"] == "table"


@pytest.mark.slow
def test_sigkill_then_resume_reaches_the_same_weights(tmp_path: Path) -> None:
    """A run killed with SIGKILL at random moments and resumed ends with the uninterrupted run's weights."""
    raw = tiny_shapes_config(n=240, epochs=8, threads=1, checkpoint_every=3)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "omnibind.cli.main", "train", str(config), "--no-eval"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([*cmd, "--out", str(tmp_path / "full")], check=True, env=env, capture_output=True)
    run = tmp_path / "killed"
    ckpt = run / "checkpoints" / "checkpoint.pt"
    rng = random.Random(0)
    kills = 0
    proc = subprocess.Popen(
        [*cmd, "--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    while kills < 3:
        deadline = time.time() + 60
        while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.8))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        proc = subprocess.Popen(
            [*cmd, "--out", str(run), "--resume"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    assert proc.wait(timeout=300) == 0
    assert kills >= 1
    _assert_same(_weights(tmp_path / "full"), _weights(run))
