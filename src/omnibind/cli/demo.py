"""``omnibind demo [--out DIR] [--quick]``: the main job on the built-in data, no download."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(
        Path("omnibind-demo"), "--out", help="Folder for the model, metrics and report."
    ),
    quick: bool = typer.Option(False, "--quick", help="A smaller, faster run (for smoke tests)."),
    overrides: list[str] = typer.Option([], "--set", help="Dotted override applied to every demo model."),
) -> None:
    """Train pairwise-CLIP and Symile models on the built-in shapes data, evaluate, report.

    Writes DIR/model (the CLIP model over four modalities), DIR/symile and DIR/symile-joint (Symile over
    image, caption and sound; the joint head on the Symile model's frozen encoders), DIR/metrics.json,
    DIR/report.md and plots.
    """
    from omnibind.training.demo import run_demo

    result = run_demo(out, quick=quick, overrides=list(overrides))
    typer.echo(f"\nreport: {result['report']}\nmetrics: {result['metrics']}\nmodel: {result['model']}")
