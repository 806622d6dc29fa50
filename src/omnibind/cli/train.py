"""``omnibind train CONFIG --out RUN [--set key=value ...] [--resume]``."""

from __future__ import annotations

from pathlib import Path

import typer


def train(
    config: Path = typer.Argument(..., help="YAML run config (see docs/config.md)."),
    out: Path = typer.Option(..., "--out", help="Run folder to create (model/, metrics.jsonl, ...)."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Dotted override, e.g. train.lr=3e-4 (repeatable)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out from its last checkpoint."
    ),
    evaluate: bool = typer.Option(True, "--eval/--no-eval", help="Evaluate on the test split at the end."),
) -> None:
    """Train a model on the data a config names, then evaluate it on the test split."""
    from omnibind.config import config_from_dict, load_config
    from omnibind.training.trainer import train as run_training

    if resume and (out / "config.yaml").exists() and not overrides:
        import yaml

        cfg = config_from_dict(yaml.safe_load((out / "config.yaml").read_text()))
    else:
        cfg = load_config(config, overrides)
    if cfg.task is not None:  # a supervised task: encoders + a fusion head
        from omnibind.training.classify import train_classifier

        fitted = train_classifier(cfg, out, resume=resume, evaluate=evaluate)
        accuracy = fitted.test["overall"]["accuracy"] if fitted.test else None
        typer.echo(f"trained {fitted.steps} steps; model saved to {out / 'model'}; test accuracy {accuracy}")
        return
    result = run_training(cfg, out, resume=resume)
    typer.echo(f"trained {result.steps} steps; model saved to {out / 'model'}")
    if evaluate:
        from omnibind.cli.evaluate import evaluate_run

        evaluate_run(out, data=None, out=out / "metrics.json", history=result.history)
