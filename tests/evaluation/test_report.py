import os

import torch

from omnibind.evaluation.report import write_report
from omnibind.evaluation.retrieval import evaluate_retrieval

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics():
    base = torch.eye(4)
    emb = {"a": base, "b": base[torch.tensor([1, 0, 2, 3])], "c": base.clone()}
    retrieval = evaluate_retrieval(emb, torch.ones(4, 3, dtype=torch.bool), list(range(4)))
    return {
        "retrieval": retrieval,
        "zero_shot": {"colour/image": {"accuracy": 0.8, "n": 10}, "shape/audio": {"accuracy": 0.4, "n": 10}},
        "relevance": "item",
        "n_items": 4,
    }


def _history():
    rows = []
    for step in range(0, 50, 5):
        row = {"step": step, "train/loss": 3.0 - step / 25, "lr": 1e-3, "logit_scale": 2.6}
        if step % 10 == 0:
            row.update({"val/mean_r@1": step / 50, "val/a->b/r@1": step / 60, "val/b->a/r@1": step / 70})
        rows.append(row)
    return rows


def test_report_writes_markdown_and_pngs(tmp_path):
    out = tmp_path / "rep"
    notes = [("Notes", "*verbatim* text")]
    path = write_report(out, _metrics(), _history(), title="Tiny", extra_sections=notes)
    assert path == out / "report.md"
    md = path.read_text(encoding="utf-8")
    for png in ("training.png", "retrieval_r1.png", "zero_shot.png"):
        assert (out / png).read_bytes()[:8] == PNG_MAGIC
        assert f"]({png})" in md
    assert md.startswith("# Tiny\n")
    assert "## Summary" in md and "Best pair" in md and "worst pair" in md
    assert "| query->target | r@1 | r@5 | r@10 | mrr | median_rank | n |" in md
    for key in _metrics()["retrieval"]:
        assert f"| `{key}` |" in md
    assert "| `colour/image` | 0.800 | 10 |" in md
    assert "## Notes\n\n*verbatim* text" in md
    assert '"n_items": 4' in md and "```json" in md
    assert sorted(os.listdir(out)) == ["report.md", "retrieval_r1.png", "training.png", "zero_shot.png"]


def test_report_without_history_or_zero_shot(tmp_path):
    metrics = {"retrieval": {"a->b": {"r@1": float("nan"), "mrr": 0.5, "median_rank": 2.0, "n": 3}}}
    md = write_report(tmp_path, metrics).read_text(encoding="utf-8")
    assert "training.png" not in md and "zero_shot.png" not in md
    assert "| `a->b` | – | 0.500 | 2.0 | 3 |" in md
    assert sorted(os.listdir(tmp_path)) == ["report.md", "retrieval_r1.png"]


def test_report_empty_metrics(tmp_path):
    md = write_report(tmp_path, {}).read_text(encoding="utf-8")
    assert "No retrieval or zero-shot results." in md
    assert os.listdir(tmp_path) == ["report.md"]
