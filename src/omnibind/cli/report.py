"""``omnibind report RUN... --out DIR``: several runs (or seeds folders) side by side."""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    runs: list[Path] = typer.Argument(..., help="Run folders or seeds folders (seed-* runs) to compare."),
    out: Path = typer.Option(..., "--out", help="Folder for report.md and comparison.png."),
    title: str = typer.Option("omnibind comparison", "--title", help="The report's heading."),
) -> None:
    """Compare runs: accuracy and macro-F1 (mean ± std over seeds) with the margin over the best unimodal
    run for classify runs, R@1 per pair for embedding runs; one table and one grouped bar plot."""
    from omnibind.evaluation.compare_report import load_run_results, write_comparison_report
    from omnibind.evaluation.seeds import pm

    names = [p.name or str(p) for p in runs]
    if len(set(names)) < len(names):  # two folders of one name: show the paths as given
        names = [str(p) for p in runs]
    loaded = [load_run_results(path, name) for path, name in zip(runs, names, strict=True)]
    path = write_comparison_report(out, loaded, title=title)
    for run in loaded:
        overall = run.aggregate.get("overall", {})
        score = (
            f"accuracy {pm(overall.get('accuracy'))}"
            if run.kind == "classify"
            else f"{len(run.results)} seed(s)"
        )
        typer.echo(f"{run.name:30s} {', '.join(run.modalities):30s} {score}")
    typer.echo(f"report: {path}")
