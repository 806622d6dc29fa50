"""The Symile paper's XOR result on one seed (slow): Symile learns what no pair carries, CLIP cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from omnibind.config import load_config
from omnibind.data.loading import build_kinds, build_splits
from omnibind.evaluation.evaluate import xor_pick_accuracy
from omnibind.training.trainer import train

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _accuracy(objective: str, tmp_path: Path) -> float:
    cfg = load_config(EXAMPLES / f"xor-{objective}.yaml", ["train.epochs=20", "train.progress=false"])
    model = train(cfg, tmp_path / objective).model
    test = build_splits(model.config, build_kinds(model.config), ("test",), fit=False, progress=False)
    return xor_pick_accuracy(model, test.datasets["test"])


@pytest.mark.slow
def test_symile_solves_xor_and_clip_stays_at_chance(tmp_path: Path) -> None:
    assert _accuracy("symile", tmp_path) >= 0.98
    assert _accuracy("clip", tmp_path) <= 0.06
