"""Seeds end to end on a tiny classify config: ``train --seeds``, ``eval`` over a seeds folder, ``report``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from omnibind.cli.main import app
from tests.helpers import tiny_shapes_config

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _classify_config(tmp: Path, modalities: tuple[str, ...], name: str) -> Path:
    """Image + caption (the two carriers of mark+tone), or one of them: a few steps each."""
    raw = tiny_shapes_config(n=120, epochs=1)
    raw["modalities"] = {m: raw["modalities"][m] for m in modalities}
    raw["task"] = {"type": "classify", "label": "mark+tone", "head": "attention", "modality_dropout": 0.2}
    raw.pop("eval")
    path = tmp / name
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("seeds")
    fused = _classify_config(tmp, ("image", "caption"), "fused.yaml")
    result = runner.invoke(app, ["train", str(fused), "--out", str(tmp / "fused"), "--seeds", "2"])
    assert result.exit_code == 0, result.output
    assert "seed 1/2: train.seed=0" in result.output and "seed 2/2: train.seed=1" in result.output
    assert "test accuracy over 2 seeds" in result.output
    image = _classify_config(tmp, ("image",), "image.yaml")
    result = runner.invoke(app, ["train", str(image), "--out", str(tmp / "image")])
    assert result.exit_code == 0, result.output
    return {"fused": tmp / "fused", "image": tmp / "image", "tmp": tmp}


def _test_ids(run: Path) -> list[str]:
    from omnibind.config import config_from_dict
    from omnibind.data.loading import build_kinds, build_splits

    cfg = config_from_dict(json.loads((run / "model" / "config.json").read_text())["config"])
    splits = build_splits(cfg, build_kinds(cfg), wanted=("test",), fit=False, progress=False)
    return list(splits.datasets["test"].ids)


def test_seeds_differ_in_weights_not_in_test_split(runs: dict[str, Path]) -> None:
    from safetensors.torch import load_file

    a, b = runs["fused"] / "seed-0", runs["fused"] / "seed-1"
    seeds = [yaml.safe_load((r / "config.yaml").read_text())["train"]["seed"] for r in (a, b)]
    assert seeds == [0, 1]
    wa, wb = (load_file(str(r / "model" / "model.safetensors")) for r in (a, b))
    assert wa.keys() == wb.keys()
    assert any(not np.allclose(wa[k].numpy(), wb[k].numpy()) for k in wa), "different seeds, same weights"
    ids = _test_ids(a)
    assert ids and ids == _test_ids(b), "every seed must be tested on the same items"


def test_eval_over_seeds_writes_metrics_report_and_plots(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = runner.invoke(
        app, ["eval", str(runs["fused"]), "--robustness", "--importance", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "run 1/2" in result.output and "run 2/2" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["seed"] for r in metrics["runs"]] == [0, 1] and len(metrics["seeds"]) == 2
    per_seed = [s["test"]["overall"]["accuracy"] for s in metrics["seeds"]]
    trained = [
        json.loads((runs["fused"] / f"seed-{k}" / "metrics.json").read_text())["test"]["overall"]["accuracy"]
        for k in range(2)
    ]
    assert per_seed == pytest.approx(trained), "eval scores the same models on the same test items"
    acc = metrics["aggregate"]["test"]["overall"]["accuracy"]
    assert acc["n"] == 2 and acc["mean"] == pytest.approx(np.mean(per_seed))
    assert acc["std"] == pytest.approx(np.std(per_seed, ddof=1))
    mcar = metrics["aggregate"]["robustness"]["mcar"]
    assert set(mcar) == {"image", "caption"} and mcar["image"][0]["rate"] == 0.0
    assert mcar["image"][0]["accuracy"]["mean"] == pytest.approx(acc["mean"]), "rate 0 is the clean score"
    assert "mnar" not in metrics["aggregate"]["robustness"], "this run had no MNAR training setting"
    assert set(metrics["aggregate"]["importance"]["shapley"]) == {"image", "caption"}
    assert metrics["seeds"][0]["importance"]["items"], "per-item categories are kept per seed"
    md = (out / "report.md").read_text(encoding="utf-8")
    for png in ("subsets.png", "mcar.png", "importance.png", "categories.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC and f"]({png})" in md, png
    assert f"| fused (each item's own modalities) | {acc['mean']:.3f} ± {acc['std']:.3f} |" in md
    assert "best single modality: `" in md and "over 2 seeds" in md


def test_eval_seeds_option_and_single_run(runs: dict[str, Path], tmp_path: Path) -> None:
    result = runner.invoke(app, ["eval", str(runs["fused"]), "--seeds", "1", "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert len(metrics["seeds"]) == 1 and "test" in metrics, "one run keeps the plain 'test' key"
    assert "not a measured spread" in (tmp_path / "one" / "report.md").read_text(encoding="utf-8")
    for bad, message in (("3", "holds only 2 seed runs"), ("0", "--seeds must be at least 1")):
        result = runner.invoke(
            app, ["eval", str(runs["fused"]), "--seeds", bad, "--out", str(tmp_path / bad)]
        )
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / bad).exists()
    result = runner.invoke(app, ["eval", str(runs["image"]), "--seeds", "2", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "is a single run" in result.output


def test_report_compares_runs_with_the_best_unimodal_one(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    result = runner.invoke(app, ["report", str(runs["fused"]), str(runs["image"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    md = (out / "report.md").read_text(encoding="utf-8")
    assert (out / "comparison.png").read_bytes()[:8] == PNG_MAGIC and "](comparison.png)" in md
    assert "Best unimodal run: `image` (image)" in md
    fused = [
        json.loads((runs["fused"] / f"seed-{k}" / "metrics.json").read_text())["test"]["overall"]["accuracy"]
        for k in range(2)
    ]
    image = json.loads((runs["image"] / "metrics.json").read_text())["test"]["overall"]["accuracy"]
    margin = 100 * (np.mean(fused) - image)
    n = json.loads((runs["fused"] / "seed-0" / "metrics.json").read_text())["test"]["overall"]["n"]
    row = f"| `fused` | attention | dropout 0.2 | caption, image | 2 | {n} | {np.mean(fused):.3f} ± "
    assert row in md, md
    assert f"| {margin:+.1f} |" in md
    assert "| `image` | attention | dropout 0.2 | image | 1 |" in md and "| reference |" in md
    assert "`image`: one seed" in md


def test_report_errors_name_the_run(runs: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["report", str(empty), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "neither a run" in result.output
    result = runner.invoke(app, ["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "does not exist" in result.output

    def variant(name: str, edit: dict) -> Path:
        copy = tmp_path / name
        shutil.copytree(runs["image"], copy)
        path = copy / "model" / "config.json"
        meta = json.loads(path.read_text())
        meta["config"]["task"].update(edit)
        path.write_text(json.dumps(meta))
        return copy

    other_label = variant("shape_run", {"label": "shape"})
    result = runner.invoke(
        app, ["report", str(runs["image"]), str(other_label), "--out", str(tmp_path / "o")]
    )
    assert (
        result.exit_code == 2
        and "'shape_run' predicts 'shape' but 'image' predicts 'mark+tone'" in result.output
    )
    other_classes = variant("fewer_classes", {"classes": ["a", "b"]})
    result = runner.invoke(
        app, ["report", str(runs["image"]), str(other_classes), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "'fewer_classes' has classes ['a', 'b']" in result.output
    unscored = variant("unscored", {})
    (unscored / "metrics.json").unlink()
    result = runner.invoke(app, ["report", str(unscored), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "has no metrics.json" in result.output
    assert not (tmp_path / "o").exists(), "nothing is written when a run is bad"
