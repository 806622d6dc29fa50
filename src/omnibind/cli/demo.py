"""``omnibind demo [--out DIR] [--quick]``: the main job on the built-in data, no download."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(
        Path("omnibind-demo"), "--out", help="Folder for the model, metrics and report."
    ),
    quick: bool = typer.Option(False, "--quick", help="A smaller, faster run (for smoke tests)."),
    overrides: list[str] = typer.Option([], "--set", help="Dotted override applied to both demo models."),
) -> None:
    """Train Symile and pairwise-CLIP models on four modalities of built-in data, evaluate, report.

    Writes DIR/model (the Symile model), DIR/clip-model, DIR/metrics.json, DIR/report.md and plots.
    """
    from omnibind.training.demo import run_demo

    result = run_demo(out, quick=quick, overrides=list(overrides))
    typer.echo(f"\nreport: {result['report']}\nmetrics: {result['metrics']}\nmodel: {result['model']}")
