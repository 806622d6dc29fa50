"""``omnibind eval RUN [--data DATA] [--out METRICS] [--robustness] [--importance] [--seeds N]``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


class NoSplitError(typer.BadParameter):
    """The data has no items in the split to evaluate (``omnibind train`` then skips its evaluation)."""

    def __init__(self, split: str) -> None:
        super().__init__(f"the data has no '{split}' split")
        self.split = split


def metrics_path(out: Path) -> Path:
    """Where an evaluation writes its metrics: ``out`` itself if it names a ``.json`` file, else
    ``out/metrics.json``."""
    return out if out.suffix == ".json" else out / "metrics.json"


def refuse_to_replace(metrics: Path, plots: tuple[str, ...], overwrite: bool) -> str:
    """The report name for ``metrics``, after checking that none of the evaluation's files exists.

    An evaluation writes ``metrics`` and its report beside it (``report.md`` for ``metrics.json``,
    ``a.md`` and ``a.<plot>.png`` for ``a.json``); a file of those names is another evaluation's, so it is
    refused before anything is computed, unless ``overwrite``.
    """
    from omnibind.errors import OmnibindError
    from omnibind.evaluation.report import report_files, report_name_for

    name = report_name_for(metrics)
    markdown, files = report_files(name, plots)
    paths = [metrics, metrics.parent / markdown, *(metrics.parent / f for f in files.values())]
    taken = [p for p in paths if p.exists()]
    if taken and not overwrite:
        shown = ", ".join(str(p) for p in taken[:4]) + (", ..." if len(taken) > 4 else "")
        raise OmnibindError(
            f"{shown} already exist{'s' if len(taken) == 1 else ''} (an earlier evaluation's); choose "
            "another --out (a.json and b.json keep their reports apart: a.md, b.md) or pass --overwrite"
        )
    return name


def evaluate_run(
    run: Path,
    data: str | None,
    out: Path,
    history: list[dict[str, Any]] | None = None,
    split: str = "",
    overwrite: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Evaluate the model of ``run`` and write the metrics and the report (with plots) at ``out``.

    ``out`` is a ``.json`` path or a folder (``metrics.json`` in it); the report is named after the metrics
    file (see :func:`refuse_to_replace`), and existing files are refused unless ``overwrite``.
    """
    from omnibind.data.loading import build_kinds, build_splits
    from omnibind.evaluation.evaluate import evaluate as run_eval
    from omnibind.evaluation.report import RETRIEVAL_PNG, TRAINING_PNG, ZERO_SHOT_PNG, write_report
    from omnibind.io import write_json_atomic
    from omnibind.model import OmniModel, model_dir
    from omnibind.training.callbacks import read_history

    if _model_format(run) == "omnibind-classifier/1":
        return _evaluate_classifier([run], data, out, split, overwrite=overwrite)
    out = metrics_path(out)
    name = refuse_to_replace(out, (RETRIEVAL_PNG, ZERO_SHOT_PNG, TRAINING_PNG), overwrite)
    model = OmniModel.load(model_dir(run), device=device)
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
            raise NoSplitError(split)
        dataset = splits.datasets[split]
    metrics = run_eval(model, dataset, cfg.eval, reference=splits.datasets.get("train"))
    metrics["split"] = split
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, metrics)
    if history is None and (run / "metrics.jsonl").exists():
        history = read_history(run / "metrics.jsonl")
    report = write_report(out.parent, metrics, history=history, title=f"omnibind report: {run}", name=name)
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


def _evaluate_classifier(
    runs: list[Path],
    data: str | None,
    out: Path,
    split: str,
    robustness: bool = False,
    importance: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score classifier runs (one run, or the seeds of a seeds folder) on a split; ``metrics.json`` + report.

    Each run gets the test metrics of every modality subset, and with the flags the robustness curves and
    the modality importance; the per-run results go under ``seeds`` and their mean ± std under
    ``aggregate``. A single run also keeps its metrics under ``test``, as a plain ``omnibind eval`` always
    wrote them.
    """
    from omnibind.errors import OmnibindError
    from omnibind.evaluation.fusion_report import PLOTS, write_fusion_report
    from omnibind.evaluation.seeds import aggregate
    from omnibind.io import write_json_atomic

    out = metrics_path(out)
    name = refuse_to_replace(out, PLOTS, overwrite)
    cache: dict[str, Any] = {}  # seeds share their data: prepare it once
    results = [
        _score_run(run, data, split, robustness, importance, f"{k + 1}/{len(runs)}", cache)
        for k, run in enumerate(runs)
    ]
    first = results[0]
    for run, result in zip(runs[1:], results[1:], strict=True):
        for key in ("label", "classes", "modalities"):
            if result[key] != first[key]:
                raise OmnibindError(
                    f"{run} has task {key} {result[key]} but {runs[0]} has {first[key]}: the runs of a seeds "
                    "folder must share their task"
                )
    keys = [k for k in ("test", "robustness", "importance") if k in first]
    metrics: dict[str, Any] = {
        "task": "classify",
        **{k: first[k] for k in ("head", "balance", "label", "modalities", "classes", "split")},
        "runs": [{"path": str(run), "seed": r["seed"]} for run, r in zip(runs, results, strict=True)],
        "seeds": [{k: r[k] for k in ("seed", *keys)} for r in results],
        "aggregate": aggregate([{k: _without_items(r[k]) for k in keys} for r in results]),
    }
    if len(runs) == 1:
        metrics["test"] = first["test"]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, metrics)
    report = write_fusion_report(
        out.parent,
        metrics,
        title=f"omnibind classification report: {runs[0].parent if len(runs) > 1 else runs[0]}",
        name=name,
    )
    _print_classify_summary(metrics)
    typer.echo(f"metrics: {out}\nreport:  {report}")
    return metrics


def _score_run(
    run: Path,
    data: str | None,
    split: str,
    robustness: bool,
    importance: bool,
    progress: str,
    cache: dict[str, Any],
) -> dict[str, Any]:
    """Everything ``omnibind eval`` measures on one classifier run (``cache``: datasets already prepared)."""
    from omnibind.errors import OmnibindError
    from omnibind.evaluation.classification import evaluate_classifier
    from omnibind.evaluation.fusion_report import balance_label
    from omnibind.fusion.classifier import Classifier
    from omnibind.model import model_dir

    model = Classifier.load(model_dir(run))
    cfg = model.config
    if (robustness or importance) and len(model.tasks) > 1:
        raise OmnibindError(
            f"{run} predicts {len(model.tasks)} tasks ({', '.join(t.name for t in model.tasks)}); "
            "--robustness and --importance score single-task classifiers only"
        )
    assert cfg.task is not None
    split = split or ("test" if data is None else "all")
    dataset = _prepared(run, cfg, data, split, cache)
    seed, batch = cfg.train.seed, cfg.eval.batch_size
    typer.echo(f"run {progress}: {run} (train.seed={seed}, {len(dataset)} {split} items)")
    result: dict[str, Any] = {
        "seed": seed,
        "head": cfg.task.head,
        "balance": balance_label(cfg.task.balance, cfg.task.modality_dropout),
        "label": cfg.task.label,
        "modalities": list(cfg.modalities),
        # one task: its class list; several tasks (multi-task heads): {label: classes}
        "classes": {t.name: list(t.classes) for t in model.tasks}
        if len(model.tasks) > 1
        else list(model.tasks[0].classes),
        "split": split,
        "test": evaluate_classifier(model, dataset, batch),
    }
    if robustness:
        from omnibind.evaluation.robustness import robustness_report

        robust = robustness_report(model, dataset, seed=seed, batch_size=batch)
        # its overall and subset scores are those under "test" (same model, same items): kept once
        result["robustness"] = {k: v for k, v in robust.items() if k not in ("overall", "subsets")}
    if importance:
        from omnibind.evaluation.importance import importance_report

        result["importance"] = importance_report(model, dataset, seed=seed, batch_size=batch)
    return result


def _prepared(run: Path, cfg: Any, data: str | None, split: str, cache: dict[str, Any]) -> Any:
    """The dataset ``omnibind eval`` scores; the seeds of a folder share theirs, so it is prepared once."""
    import json

    from omnibind.data.loading import build_kinds, build_splits

    # the same data, split and fitted kind statistics give the same prepared items
    raw = cfg.to_dict()
    key = json.dumps([raw["data"], raw["modalities"], data, split], sort_keys=True, default=str)
    if key not in cache:
        wanted = ("train", "val", "test") if split == "all" else (split,)
        splits = build_splits(cfg, build_kinds(cfg), wanted=wanted, fit=False, source=data, progress=False)
        datasets = [splits.datasets[s] for s in wanted if s in splits.datasets]
        if not datasets:
            raise typer.BadParameter(f"the data of {run} has no '{split}' split")
        cache[key] = datasets[0] if len(datasets) == 1 else _concat(datasets)
    return cache[key]


def _without_items(result: Any) -> Any:
    """``result`` without the per-item list of the importance report (kept per seed, not averaged)."""
    if isinstance(result, dict) and "items" in result:
        return {k: v for k, v in result.items() if k != "items"}
    return result


def _print_classify_summary(metrics: dict[str, Any]) -> None:
    from omnibind.evaluation.seeds import mean_of, std_of

    agg = metrics["aggregate"]["test"]
    n = len(metrics["seeds"])
    acc = agg["overall"]["accuracy"]
    typer.echo(
        f"accuracy {mean_of(acc):.3f} ± {std_of(acc):.3f} on {metrics['split']} over {n} run(s) "
        f"({metrics['head']}, balance: {metrics['balance']})"
    )
    for name, sub in agg.get("subsets", {}).items():
        if mean_of(sub.get("accuracy")) is not None:
            typer.echo(f"  {name:30s} {mean_of(sub['accuracy']):.3f} ± {std_of(sub['accuracy']):.3f}")


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
    run: Path = typer.Argument(..., help="Run folder, model folder, or a folder of seed-* runs."),
    out: Path | None = typer.Option(
        None,
        "--out",
        help="Metrics file (NAME.json; its report NAME.md goes beside it) or folder (metrics.json and "
        "report.md in it); default: RUN/eval.",
    ),
    data: str = typer.Option(
        "", "--data", help="Manifest path or builtin:NAME[?k=v]; default: the run's data."
    ),
    split: str = typer.Option("", "--split", help="train/val/test/all (default: test, or all with --data)."),
    robustness: bool = typer.Option(
        False,
        "--robustness",
        help="Classify runs: accuracy against each modality's missing rate (MCAR), MNAR.",
    ),
    importance: bool = typer.Option(
        False, "--importance", help="Classify runs: modality importance (permutation, ablation, Shapley)."
    ),
    seeds: int | None = typer.Option(
        None, "--seeds", help="Use the first N seed-* runs of RUN (default: all); mean ± std over them."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace the metrics and report files of an earlier evaluation."
    ),
    device: str = typer.Option(
        "auto", "--device", help="Embedding runs: auto (CUDA where there is one), cpu, cuda[:N], mps."
    ),
) -> None:
    """Evaluate trained models: retrieval and zero-shot for embedding runs; for classify runs accuracy,
    macro-F1 and AUROC per modality subset, with --robustness and --importance, over seeds."""
    from omnibind.errors import OmnibindError
    from omnibind.evaluation.seeds import find_runs

    runs = find_runs(run, seeds)
    out = out if out is not None else run / "eval"
    if _model_format(runs[0]) == "omnibind-classifier/1":
        _evaluate_classifier(runs, data or None, out, split, robustness, importance, overwrite)
        return
    if robustness or importance or len(runs) > 1:
        wanted = [f for f, on in (("--robustness", robustness), ("--importance", importance)) if on]
        what = " and ".join(wanted) if wanted else "a folder of seed runs"
        raise OmnibindError(
            f"{what}: only for classify runs (a config with a 'task' section); {run} holds embedding "
            "model(s): evaluate one run at a time and compare them with `omnibind report`"
        )
    evaluate_run(runs[0], data or None, out, split=split, overwrite=overwrite, device=device)
