"""``omnibind train`` / ``omnibind eval`` as a user runs them: XOR ground truth and pick-b accuracy, a run
without a test split, reports named after their metrics file and never replaced unasked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from omnibind.cli.main import app
from tests.helpers import tiny_shapes_config

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# the Symile example on a small XOR problem: 3 bits, so a few epochs solve it
SMALL_XOR = [
    "data.source=builtin:xor?p=1.0&d_v=3&n_train=2000&n_val=0&n_test=400&seed=0",
    *(f"modalities.{m}.dim=3" for m in "abc"),
    "train.epochs=30",
    "train.batch_size=250",
    "train.progress=false",
    "train.threads=1",
]


def _train(config: Path, out: Path, *overrides: str) -> str:
    args = ["train", str(config), "--out", str(out)]
    for item in overrides:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("xor") / "symile"
    _train(EXAMPLES / "xor-symile.yaml", out, *SMALL_XOR)
    return out


def test_eval_of_a_solved_xor_scores_the_composed_query_and_pick_b(xor_run: Path, tmp_path: Path) -> None:
    from omnibind.data.loading import build_kinds, build_splits
    from omnibind.evaluation.evaluate import xor_pick_accuracy
    from omnibind.model import OmniModel, model_dir

    out = tmp_path / "m.json"
    result = runner.invoke(app, ["eval", str(xor_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    # a+c determine b: every test item whose b equals the query's is a right answer
    assert metrics["retrieval"]["a+c->b"]["r@1"] >= 0.98, metrics["retrieval"]["a+c->b"]
    assert metrics["retrieval"]["a+c->b"]["median_rank"] == 1
    # one modality says nothing about another: chance (1/8 here), not the 0.000 of a tie trap
    assert 0.04 < metrics["retrieval"]["a->b"]["r@1"] < 0.3, metrics["retrieval"]["a->b"]
    pick = metrics["xor_pick"]["a+c->b"]
    assert pick["chance"] == 1 / 8 and pick["bayes"] == 1.0 and pick["n"] == 400
    # the library function the benchmark prints gives the same number
    model = OmniModel.load(model_dir(xor_run))
    test = build_splits(model.config, build_kinds(model.config), ("test",), fit=False, progress=False)
    assert pick["accuracy"] == xor_pick_accuracy(model, test.datasets["test"]) >= 0.98


def test_train_without_a_test_split_skips_the_evaluation_and_exits_0(tmp_path: Path) -> None:
    rows = [
        {
            "id": f"r{i}",
            "caption": f"a {'red' if i % 2 else 'blue'} thing {i}",
            "table": {"w": i % 7, "h": i % 3},
        }
        for i in range(40)
    ]
    manifest = tmp_path / "items.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = tiny_shapes_config(n=40, epochs=1)
    raw["modalities"] = {
        "caption": raw["modalities"]["caption"],
        "table": {"kind": "tabular", "columns": ["w", "h"]},
    }
    raw["data"] = {"source": str(manifest), "test_fraction": 0, "val_fraction": 0}
    raw.pop("eval")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    output = _train(config, tmp_path / "run")
    assert "no 'test' split (data.test_fraction is 0" in output and "skipped the final evaluation" in output
    assert (tmp_path / "run" / "model").is_dir() and not (tmp_path / "run" / "metrics.json").exists()
    # a classify run in the same situation: trained, saved, says why there is no test accuracy
    for row in rows:
        row["label"] = "red" if "red" in row["caption"] else "blue"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw["task"] = {"type": "classify"}
    config.write_text(yaml.safe_dump(raw))
    output = _train(config, tmp_path / "classify")
    assert "skipped the final evaluation" in output and (tmp_path / "classify" / "model").is_dir()


def test_two_evaluations_in_one_folder_keep_their_reports(xor_run: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert runner.invoke(app, ["eval", str(xor_run), "--out", str(a)]).exit_code == 0
    other = "builtin:xor?p=1.0&d_v=3&n_train=0&n_val=0&n_test=100&seed=5"
    result = runner.invoke(app, ["eval", str(xor_run), "--data", other, "--out", str(b)])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert {"a.json", "a.md", "a.retrieval_r1.png", "b.json", "b.md", "b.retrieval_r1.png"} <= set(names)
    assert "report.md" not in names
    assert "(a.retrieval_r1.png)" in (tmp_path / "a.md").read_text()
    assert json.loads(a.read_text())["n_items"] == 400 and json.loads(b.read_text())["n_items"] == 100
    # the same name again: refused before anything is computed, the first files untouched
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    result = runner.invoke(app, ["eval", str(xor_run), "--data", other, "--out", str(a)])
    assert result.exit_code == 2 and "already exist" in result.output and "--overwrite" in result.output
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    result = runner.invoke(app, ["eval", str(xor_run), "--data", other, "--out", str(a), "--overwrite"])
    assert result.exit_code == 0 and json.loads(a.read_text())["n_items"] == 100
    # a folder: metrics.json and report.md, refused the second time too
    folder = tmp_path / "eval"
    assert runner.invoke(app, ["eval", str(xor_run), "--out", str(folder)]).exit_code == 0
    assert (folder / "metrics.json").exists() and (folder / "report.md").exists()
    assert runner.invoke(app, ["eval", str(xor_run), "--out", str(folder)]).exit_code == 2


@pytest.mark.slow
@pytest.mark.parametrize("objective, low, high", [("symile", 0.98, 1.0), ("clip", 0.0, 0.06)])
def test_xor_examples_through_the_cli(objective: str, low: float, high: float, tmp_path: Path) -> None:
    """The paper's figures at p = 1 from the shipped examples, as `omnibind train` + `omnibind eval` print."""
    run = tmp_path / objective
    _train(EXAMPLES / f"xor-{objective}.yaml", run, "train.progress=false")
    result = runner.invoke(app, ["eval", str(run), "--out", str(tmp_path / "m.json")])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    r1 = metrics["retrieval"]["a+c->b"]["r@1"]
    pick = metrics["xor_pick"]["a+c->b"]["accuracy"]
    assert low <= r1 <= high and low <= pick <= high, (r1, pick)
    assert "a+c->b" in result.output
