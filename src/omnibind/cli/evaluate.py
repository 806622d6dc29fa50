"""``omnibind eval RUN [--data DATA] --out METRICS``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def evaluate_run(
    run: Path, data: str | None, out: Path, history: list[dict[str, Any]] | None = None, split: str = ""
) -> dict[str, Any]:
    """Evaluate the model of ``run`` and write ``metrics.json`` + ``report.md`` (with plots) at ``out``."""
    from omnibind.data.loading import build_kinds, build_splits
    from omnibind.evaluation.evaluate import evaluate as run_eval
    from omnibind.evaluation.report import write_report
    from omnibind.io import write_json_atomic
    from omnibind.model import OmniModel, model_dir
    from omnibind.training.callbacks import read_history

    if _model_format(run) == "omnibind-classifier/1":
        return _evaluate_classifier(run, data, out, split)
    model = OmniModel.load(model_dir(run))
    cfg = model.config
    kinds = build_kinds(cfg)
    split = split or (cfg.eval.split if data is None else "all")
    wanted = ("train", "val", "test") if split == "all" else (split, "train")
    splits = build_splits(cfg, kinds, wanted=wanted, fit=False, source=data, progress=True)
    if split == "all":
        from omnibind.data.dataset import Dataset

        datasets = [splits.datasets[s] for s in ("train", "val", "test") if s in splits.datasets]
        dataset: Dataset = datasets[0] if len(datasets) == 1 else _concat(datasets)
    else:
        if split not in splits.datasets:
            raise typer.BadParameter(f"the data has no '{split}' split")
        dataset = splits.datasets[split]
    metrics = run_eval(model, dataset, cfg.eval, reference=splits.datasets.get("train"))
    metrics["split"] = split
    out = out if out.suffix == ".json" else out / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, metrics)
    if history is None and (run / "metrics.jsonl").exists():
        history = read_history(run / "metrics.jsonl")
    report = write_report(out.parent, metrics, history=history, title=f"omnibind report: {run}")
    _print_summary(metrics)
    typer.echo(f"metrics: {out}\nreport:  {report}")
    return metrics


def _concat(datasets: list[Any]) -> Any:
    from omnibind.data.dataset import concat_datasets

    return concat_datasets(datasets)


def _model_format(run: Path) -> str:
    import json

    from omnibind.model import model_dir

    path = model_dir(run) / "config.json"
    return json.loads(path.read_text()).get("format", "") if path.exists() else ""


def _evaluate_classifier(run: Path, data: str | None, out: Path, split: str) -> dict[str, Any]:
    """Score a classifier run (``task: classify``) on a split; writes ``metrics.json``."""
    from omnibind.data.loading import build_kinds, build_splits
    from omnibind.evaluation.classification import evaluate_classifier
    from omnibind.fusion.classifier import Classifier
    from omnibind.io import write_json_atomic
    from omnibind.model import model_dir

    model = Classifier.load(model_dir(run))
    split = split or ("test" if data is None else "all")
    wanted = ("train", "val", "test") if split == "all" else (split,)
    splits = build_splits(model.config, build_kinds(model.config), wanted=wanted, fit=False, source=data)
    datasets = [splits.datasets[s] for s in wanted if s in splits.datasets]
    if not datasets:
        raise typer.BadParameter(f"the data has no '{split}' split")
    dataset = datasets[0] if len(datasets) == 1 else _concat(datasets)
    metrics = {"task": "classify", "split": split, "test": evaluate_classifier(model, dataset)}
    out = out if out.suffix == ".json" else out / "metrics.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, metrics)
    overall = metrics["test"]["overall"]
    typer.echo(f"accuracy {overall['accuracy']:.3f} on {split} ({overall.get('n', len(dataset))} items)")
    for name, sub in metrics["test"].get("subsets", {}).items():
        if sub.get("accuracy") is not None:
            typer.echo(f"  {name:30s} {sub['accuracy']:.3f} (n={sub['n']})")
    typer.echo(f"metrics: {out}")
    return metrics


def _print_summary(metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"retrieval (relevance: {metrics.get('relevance')})")
    for col in ("query -> target", "R@1", "R@5", "R@10", "MRR", "median rank", "n"):
        table.add_column(col)
    for key, m in metrics["retrieval"].items():
        table.add_row(
            key, *(f"{m[k]:.3f}" for k in ("r@1", "r@5", "r@10", "mrr")), f"{m['median_rank']:g}", str(m["n"])
        )
    console = Console()
    console.print(table)
    if metrics.get("zero_shot"):
        zs = Table(title="zero-shot")
        zs.add_column("task/target")
        zs.add_column("accuracy")
        zs.add_column("n")
        for key, m in metrics["zero_shot"].items():
            zs.add_row(key, f"{m['accuracy']:.3f}", str(m["n"]))
        console.print(zs)


def evaluate(
    run: Path = typer.Argument(..., help="Run folder (or a model folder)."),
    out: Path = typer.Option(..., "--out", help="Where to write metrics.json (report.md goes beside it)."),
    data: str = typer.Option(
        "", "--data", help="Manifest path or builtin:NAME[?k=v]; default: the run's data."
    ),
    split: str = typer.Option("", "--split", help="train/val/test/all (default: test, or all with --data)."),
) -> None:
    """Evaluate a trained model: retrieval for every pair and composed query, zero-shot accuracy."""
    evaluate_run(run, data or None, out, split=split)
