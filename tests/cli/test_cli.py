"""The command line: instant help, and train -> eval -> embed -> info on a tiny config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from omnibind.cli.main import app
from tests.helpers import tiny_shapes_config

runner = CliRunner()


def test_help_does_not_import_torch() -> None:
    code = "import sys; from omnibind.cli.main import app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "`omnibind --help` must not pay for importing torch"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "train", "eval", "embed", "info"):
        assert command in result.output


def test_python_dash_m_runs_the_cli() -> None:
    """``python -m omnibind`` (what ``torchrun -m omnibind`` starts) is the same command line."""
    out = subprocess.run(
        [sys.executable, "-m", "omnibind", "--help"], capture_output=True, text=True, check=True
    )
    assert "Usage: omnibind" in out.stdout and "train" in out.stdout


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("cli")
    config = tmp / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_shapes_config(n=120, epochs=1)))
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp / "run"), "--set", "train.seed=3"])
    assert result.exit_code == 0, result.output
    return tmp / "run"


def test_train_writes_model_metrics_and_report(trained_run: Path) -> None:
    for name in (
        "model/config.json",
        "model/model.safetensors",
        "metrics.json",
        "report.md",
        "metrics.jsonl",
    ):
        assert (trained_run / name).exists(), name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics["retrieval"]["image->caption"]) == {"r@1", "r@5", "r@10", "mrr", "median_rank", "n"}
    assert any("+" in key for key in metrics["retrieval"]), "composed queries are evaluated"
    assert set(metrics["zero_shot"]["shape_colour/image"]) == {"accuracy", "n"}
    assert (trained_run / "retrieval_r1.png").exists()


def test_eval_on_other_data_and_embed_and_info(trained_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "eval",
            str(trained_run),
            "--data",
            "builtin:shapes?n=60&seed=9&image_size=16&seconds=0.25",
            "--out",
            str(tmp_path / "m.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.json").read_text())["n_items"] == 60
    result = runner.invoke(
        app,
        [
            "embed",
            str(trained_run),
            "--data",
            "builtin:shapes?n=30&seed=9&image_size=16&seconds=0.25",
            "--out",
            str(tmp_path / "e.parquet"),
        ],
    )
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.num_rows == 30
    assert {"id", "split", "label", "image", "caption", "sound", "table"} <= set(table.column_names)
    assert len([v for v in table.column("image").to_pylist() if v is not None][0]) == 16
    result = runner.invoke(app, ["info", str(trained_run), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["dim"] == 16


def test_errors_are_one_line_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({**tiny_shapes_config(), "trian": {}}))
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "did you mean 'train'" in result.output
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 2 and "not an omnibind model" in result.output


def test_train_and_eval_dispatch_on_a_classify_task(tmp_path: Path) -> None:
    raw = tiny_shapes_config(n=120, epochs=1)
    raw["task"] = {"type": "classify", "label": "mark+tone", "head": "attention"}
    raw.pop("eval")
    config = tmp_path / "cls.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output
    result = runner.invoke(app, ["eval", str(tmp_path / "run"), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["task"] == "classify", metrics
    assert "image" in metrics["test"]["subsets"], list(metrics["test"]["subsets"])


@pytest.mark.parametrize("seeds", ["0", "-1"])
def test_train_seeds_below_one_is_an_error_and_writes_nothing(tmp_path: Path, seeds: str) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_shapes_config(n=60, epochs=1)))
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run"), "--seeds", seeds])
    assert result.exit_code == 2
    assert f"--seeds must be at least 1, got {seeds}" in result.output
    assert not (tmp_path / "run").exists()


def test_train_seeds_checks_every_folder_before_writing(tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_shapes_config(n=60, epochs=1)))
    (tmp_path / "run" / "seed-1" / "model").mkdir(parents=True)  # seed-1 already holds a run
    result = runner.invoke(app, ["train", str(config), "--out", str(tmp_path / "run"), "--seeds", "2"])
    assert result.exit_code == 2 and "seed-1 already holds a run" in result.output
    assert not (tmp_path / "run" / "seed-0").exists(), "seed-0 must not be trained when seed-1 would fail"


def test_embedding_seeds_and_report_side_by_side(trained_run: Path, tmp_path: Path) -> None:
    raw = tiny_shapes_config(n=80, epochs=1)
    raw["modalities"] = {m: raw["modalities"][m] for m in ("image", "caption")}  # two encoders: quick
    raw["eval"]["joint"] = False
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(raw))
    seeds = tmp_path / "seeds"
    result = runner.invoke(app, ["train", str(config), "--out", str(seeds), "--seeds", "2"])
    assert result.exit_code == 0, result.output
    for k in range(2):
        assert (seeds / f"seed-{k}" / "metrics.json").exists() and (
            seeds / f"seed-{k}" / "report.md"
        ).exists()
    result = runner.invoke(app, ["report", str(trained_run), str(seeds), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "cmp" / "report.md").read_text(encoding="utf-8")
    assert "## Retrieval R@1" in md and "`image->caption`" in md
    r1 = [
        json.loads((seeds / f"seed-{k}" / "metrics.json").read_text())["retrieval"]["image->caption"]["r@1"]
        for k in range(2)
    ]
    import numpy as np

    assert f"{np.mean(r1):.3f} ± {np.std(r1, ddof=1):.3f}" in md
    assert (tmp_path / "cmp" / "comparison.png").exists()
    result = runner.invoke(app, ["eval", str(trained_run), "--robustness", "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "only for classify runs" in result.output
