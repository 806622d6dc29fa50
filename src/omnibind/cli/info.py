"""``omnibind info RUN``."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def info(
    run: Path = typer.Argument(..., help="Run folder (or a model folder)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Describe a trained model: modalities, kinds, encoders, parameters, objective, width."""
    from omnibind.model import OmniModel, model_dir

    model = OmniModel.load(model_dir(run))
    desc = model.describe()
    if as_json:
        typer.echo(json.dumps(desc, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{run}: D={desc['dim']}, objective={desc['objective']}, "
        f"logit scale={desc['logit_scale']:.2f}, {desc['parameters']:,} parameters"
    )
    for col in ("modality", "kind", "encoder", "trainable encoder params", "projection params"):
        table.add_column(col)
    for name, m in desc["modalities"].items():
        table.add_row(
            name, m["kind"], m["encoder"], f"{m['trainable_encoder_params']:,}", f"{m['projection_params']:,}"
        )
    Console().print(table)
