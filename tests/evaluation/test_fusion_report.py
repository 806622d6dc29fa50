"""The classifier report over seeds: sections, numbers beside the best unimodal one, PNGs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from omnibind.evaluation.fusion_report import best_unimodal, margin_text, write_fusion_report
from omnibind.evaluation.seeds import aggregate, pm, summarise

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _scores(acc: float, n: int = 100) -> dict:
    return {"accuracy": acc, "macro_f1": acc - 0.05, "auroc": min(1.0, acc + 0.05), "n": n}


def _seed_result(k: int, robustness: bool = True, importance: bool = True) -> dict:
    """What ``omnibind eval`` measures on one run, with numbers that move a little with the seed."""
    d = 0.01 * k
    result: dict = {
        "seed": k,
        "test": {
            "overall": _scores(0.90 + d),
            "subsets": {
                "image": _scores(0.60 + d, 80),
                "audio": _scores(0.70 - d, 80),
                "image+audio": _scores(0.92 + d, 64),
            },
            "classes": ["0", "1", "2"],
        },
    }
    if robustness:
        rates = (0.0, 0.5, 1.0)
        result["robustness"] = {
            "mcar": {
                m: [{"rate": r, **_scores(0.9 + d - drop * r)} for r in rates]
                for m, drop in (("image", 0.2), ("audio", 0.3))
            },
            "mnar": {
                "clean": _scores(0.9 + d),
                "flipped": _scores(0.8 + 2 * d),
                "drop": 0.1 - d,
                "modality": "audio",
                "rate": 0.8,
                "flipped_label": "2",
                "trained_label": "1",
                "dropped": 8,
                "affected": {"clean_accuracy": 0.9, "flipped_accuracy": 0.5 + d},
            },
        }
    if importance:
        result["importance"] = {
            "permutation": {"image": 0.2 + d, "audio": 0.3},
            "ablation": {"image": 0.22, "audio": 0.31 - d},
            "shapley": {"image": 0.25, "audio": 0.35 + d},
            "categories": {
                "counts": {"needs image": 10, "needs audio": 20 + k, "any": 60, "combination": 10 - k},
                "shares": {"needs image": 0.1, "needs audio": 0.2 + d, "any": 0.6, "combination": 0.1 - d},
            },
        }
    return result


def _metrics(seeds: int = 3, **flags: bool) -> dict:
    results = [_seed_result(k, **flags) for k in range(seeds)]
    keys = [k for k in ("test", "robustness", "importance") if k in results[0]]
    return {
        "task": "classify",
        "head": "attention",
        "balance": "dropout 0.2",
        "label": "digit",
        "modalities": ["image", "audio"],
        "classes": ["0", "1", "2"],
        "split": "test",
        "runs": [{"path": f"runs/x/seed-{k}", "seed": k} for k in range(seeds)],
        "seeds": results,
        "aggregate": aggregate([{k: r[k] for k in keys} for r in results]),
    }


def test_report_has_every_section_and_plot(tmp_path: Path) -> None:
    metrics = _metrics()
    md = write_fusion_report(tmp_path, metrics, title="Tiny fusion").read_text(encoding="utf-8")
    assert md.startswith("# Tiny fusion\n")
    for png in ("subsets.png", "mcar.png", "mnar.png", "importance.png", "categories.png"):
        assert (tmp_path / png).read_bytes()[:8] == PNG_MAGIC, png
        assert f"]({png})" in md, png
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["report.md", "subsets.png", "mcar.png", "mnar.png", "importance.png", "categories.png"]
    )
    acc = [0.90, 0.91, 0.92]
    fused = f"{np.mean(acc):.3f} ± {np.std(acc, ddof=1):.3f}"
    # the best single modality is audio (0.70, 0.69, 0.68 beats image's 0.60, 0.61, 0.62)
    audio = f"{np.mean([0.70, 0.69, 0.68]):.3f} ± {np.std([0.70, 0.69, 0.68], ddof=1):.3f}"
    assert f"| fused (each item's own modalities) | {fused} |" in md
    assert f"| best single modality: `audio` | {audio} |" in md
    assert "+22.0 points; beyond 2 std of the fused score: yes" in md
    assert "over 3 seeds" in md
    assert "| `image+audio` |" in md and "| `image` |" in md
    assert "## Missing completely at random" in md and "| 1.00 |" in md
    assert "losing `audio` from every item costs the most (30.0 points" in md
    drop = [0.1, 0.09, 0.08]
    assert f"| drop (clean - flipped) | {np.mean(drop):.3f} ± {np.std(drop, ddof=1):.3f} |" in md
    assert (
        "`audio` missing in training mostly for class `1`; at test it goes missing for 80% of the items" in md
    )
    assert "of class `2` instead (8 test items)" in md
    assert "| only the items that lost it: clean / flipped | 0.900 ± 0.000 / 0.510 ± 0.010 |" in md
    assert "| `audio` | 0.300 ± 0.000 |" in md, "permutation, ablation, shapley columns per modality"
    assert "Most important modality (Shapley): `audio`" in md
    assert "Largest item category: any (60% of items)" in md
    assert "| `seed-2` | 2 | 0.920 | 0.870 | 0.970 |" in md


def test_report_without_flags_and_with_one_seed(tmp_path: Path) -> None:
    metrics = _metrics(seeds=1, robustness=False, importance=False)
    md = write_fusion_report(tmp_path, metrics).read_text(encoding="utf-8")
    assert sorted(os.listdir(tmp_path)) == ["report.md", "subsets.png"]
    assert "not a measured spread" in md
    assert "beyond 2 std of the fused score: n/a (one seed)" in md
    assert "Missing" not in md and "importance" not in md


def test_helpers() -> None:
    assert pm(summarise([0.5, 0.7])) == "0.600 ± 0.141"
    assert pm(None) == "–" and pm(0.25) == "0.250 ± 0.000"
    subsets = {
        "a": {"accuracy": summarise([0.4])},
        "b": {"accuracy": None},
        "a+b": {"accuracy": summarise([0.9])},
    }
    assert best_unimodal(subsets)[0] == "a"
    assert best_unimodal({"a+b": {"accuracy": 0.9}}) is None
    assert margin_text(summarise([0.8, 0.82]), summarise([0.7, 0.7]), 2) == ("+11.0", "yes")
    assert margin_text(summarise([0.7, 0.8]), summarise([0.7, 0.7]), 2) == ("+5.0", "no")
