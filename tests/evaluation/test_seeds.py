"""Mean and spread over seeds: the math against numpy, curves, non-numeric leaves, seeds folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omnibind.errors import OmnibindError
from omnibind.evaluation.seeds import aggregate, find_runs, is_summary, seed_dir, spread_note, summarise


def _result(rng: np.random.Generator) -> dict:
    return {
        "overall": {"accuracy": float(rng.random()), "auroc": float(rng.random()), "n": 50},
        "subsets": {"a": {"accuracy": float(rng.random()), "n": 40}},
        "classes": ["0", "1"],
    }


def test_mean_and_sample_std_match_numpy() -> None:
    rng = np.random.default_rng(0)
    results = [_result(rng) for _ in range(5)]
    agg = aggregate(results)
    values = np.array([r["overall"]["accuracy"] for r in results])
    leaf = agg["overall"]["accuracy"]
    assert leaf["mean"] == pytest.approx(values.mean())
    assert leaf["std"] == pytest.approx(values.std(ddof=1))
    assert leaf["n"] == 5 and leaf["values"] == pytest.approx(values.tolist())
    sub = np.array([r["subsets"]["a"]["accuracy"] for r in results])
    assert agg["subsets"]["a"]["accuracy"]["std"] == pytest.approx(sub.std(ddof=1))
    assert agg["overall"]["n"] == {"mean": 50.0, "std": 0.0, "n": 5, "values": [50.0] * 5}
    assert agg["classes"] == ["0", "1"], "non-numeric leaves that agree are kept as they are"


def test_one_seed_has_zero_std_and_says_so() -> None:
    agg = aggregate([{"accuracy": 0.7}])
    assert agg["accuracy"] == {"mean": 0.7, "std": 0.0, "n": 1, "values": [0.7]}
    assert "not a measured spread" in spread_note(1)
    assert "3 seeds" in spread_note(3)


def test_none_and_missing_values_are_left_out_of_the_count() -> None:
    agg = aggregate([{"auroc": 0.8, "x": 1.0}, {"auroc": None}, {"auroc": 0.6, "x": 3.0}])
    assert agg["auroc"]["n"] == 2 and agg["auroc"]["mean"] == pytest.approx(0.7)
    assert agg["x"]["n"] == 2 and agg["x"]["std"] == pytest.approx(np.std([1.0, 3.0], ddof=1))
    assert aggregate([{"auroc": None}, {"auroc": None}]) == {"auroc": None}


def test_missing_rate_curves_are_aggregated_point_by_point() -> None:
    curves = [
        {"image": [{"rate": 0.0, "accuracy": 0.9, "n": 10}, {"rate": 0.5, "accuracy": 0.6, "n": 10}]},
        {"image": [{"rate": 0.0, "accuracy": 0.8, "n": 10}, {"rate": 0.5, "accuracy": 0.4, "n": 10}]},
    ]
    agg = aggregate(curves)["image"]
    assert [p["rate"] for p in agg] == [0.0, 0.5], "the rate stays a plain number"
    assert agg[1]["accuracy"]["mean"] == pytest.approx(0.5)
    assert agg[1]["accuracy"]["std"] == pytest.approx(np.std([0.6, 0.4], ddof=1))
    curves[1]["image"][1]["rate"] = 0.4
    with pytest.raises(ValueError, match=r"image: the rates differ"):
        aggregate(curves)


def test_differing_strings_and_structure_errors() -> None:
    agg = aggregate([{"head": "late", "cat": "any"}, {"head": "late", "cat": "needs image"}])
    assert agg["head"] == "late" and agg["cat"] == {"values": ["any", "needs image"]}
    with pytest.raises(ValueError, match=r"a\.b: not the same structure"):
        aggregate([{"a": {"b": 1.0}}, {"a": {"b": {"c": 1.0}}}])
    with pytest.raises(ValueError, match=r"xs: lists of different lengths"):
        aggregate([{"xs": [1.0, 2.0]}, {"xs": [1.0]}])
    with pytest.raises(ValueError, match="at least one"):
        aggregate([])
    assert is_summary(summarise([1.0, 2.0])) and not is_summary({"mean": 1.0})


def _fake_run(path: Path) -> Path:
    (path / "model").mkdir(parents=True)
    (path / "model" / "config.json").write_text("{}")
    return path


def test_find_runs_single_seeds_folder_and_errors(tmp_path: Path) -> None:
    single = _fake_run(tmp_path / "single")
    assert find_runs(single) == [single]
    assert find_runs(single, 1) == [single]
    with pytest.raises(OmnibindError, match="single run, so --seeds 2"):
        find_runs(single, 2)
    folder = tmp_path / "seeds"
    for k in (0, 1, 2, 10):
        _fake_run(seed_dir(folder, k))
    assert [p.name for p in find_runs(folder)] == ["seed-0", "seed-1", "seed-2", "seed-10"]
    assert [p.name for p in find_runs(folder, 2)] == ["seed-0", "seed-1"]
    with pytest.raises(OmnibindError, match="--seeds 5: .* holds only 4 seed runs"):
        find_runs(folder, 5)
    with pytest.raises(OmnibindError, match="--seeds must be at least 1, got 0"):
        find_runs(folder, 0)
    (folder / "seed-3").mkdir()
    with pytest.raises(OmnibindError, match="seed-3 holds no trained model"):
        find_runs(folder)
    with pytest.raises(OmnibindError, match="neither a run"):
        find_runs(tmp_path / "seeds" / "seed-3")
    with pytest.raises(OmnibindError, match="does not exist"):
        find_runs(tmp_path / "nowhere")
