"""The demo: quick smoke run (fast enough for every CI run) and the full run's headline figures (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnibind.errors import OmnibindError
from omnibind.training.demo import run_demo


def _check_layout(out: Path) -> dict:
    for name in (
        "model/config.json",
        "model/model.safetensors",
        "symile/model/config.json",
        "symile-joint/model/config.json",
        "metrics.json",
        "report.md",
        "retrieval_r1.png",
        "training.png",
        "zero_shot.png",
        "joint_facts.png",
    ):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["symile"]["side_by_side"]["joint_facts"], "the report compares the joint facts"
    assert "Symile vs pairwise CLIP" in (out / "report.md").read_text()
    return metrics


@pytest.mark.slow
def test_quick_demo_writes_everything_and_refuses_to_overwrite(tmp_path: Path) -> None:
    run_demo(tmp_path / "demo", quick=True, overrides=["train.progress=false"])
    _check_layout(tmp_path / "demo")
    with pytest.raises(OmnibindError, match="already holds a demo"):
        run_demo(tmp_path / "demo", quick=True)


@pytest.mark.slow
def test_full_demo_reaches_the_issue_figures(tmp_path: Path) -> None:
    metrics = _check_layout(run_demo(tmp_path / "demo", overrides=["train.progress=false"])["model"].parent)
    assert metrics["retrieval"]["image->caption"]["r@1"] >= 0.8
    assert metrics["retrieval"]["caption->image"]["r@1"] >= 0.8
    assert metrics["zero_shot"]["shape_colour/image"]["accuracy"] >= 0.9
    # the XOR bits: the Symile joint head retrieves them, pairwise CLIP does not (chance is about 0.5)
    for row in metrics["symile"]["side_by_side"]["joint_facts"]:
        assert row["symile_joint"] >= row["chance"] + 0.15, row
        assert row["clip"] <= row["chance"] + 0.08, row
