"""``omnibind train CONFIG --out RUN [--set key=value ...] [--resume] [--seeds N] [--nproc N]``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    seeds: int | None = typer.Option(
        None,
        "--seeds",
        help="Train N runs RUN/seed-0 .. seed-(N-1) with train.seed = base + k (same data split).",
    ),
    nproc: int | None = typer.Option(
        None,
        "--nproc",
        help="Train in N processes on this machine: runs torchrun --nproc-per-node N -m omnibind train ...",
    ),
) -> None:
    """Train a model on the data a config names, then evaluate it on the test split."""
    from omnibind.config import load_config
    from omnibind.errors import OmnibindError

    if seeds is not None and seeds < 1:
        raise OmnibindError(f"--seeds must be at least 1, got {seeds} (nothing was written)")
    if nproc is not None:
        args = ["train", str(config), "--out", str(out)]
        args += [x for o in overrides for x in ("--set", o)]
        args += ["--resume"] * resume + ["--no-eval"] * (not evaluate)
        args += ["--seeds", str(seeds)] if seeds is not None else []
        _launch(nproc, args)
        return
    if seeds is None:
        _train_one(_run_config(config, out, overrides, resume), out, resume, evaluate)
        return
    _train_seeds(load_config(config, overrides), config, out, overrides, resume, evaluate, seeds)


def _launch(nproc: int, args: list[str]) -> None:
    """Re-run this command under ``torchrun --standalone --nproc-per-node N`` and exit with its status."""
    import os
    import subprocess
    import sys

    from omnibind.errors import OmnibindError

    if nproc < 1:
        raise OmnibindError(f"--nproc must be at least 1, got {nproc} (nothing was written)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise OmnibindError("--nproc inside torchrun: drop --nproc (torchrun already started the processes)")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    typer.echo(f"launching {nproc} processes: torchrun --standalone --nproc-per-node {nproc} -m omnibind ...")
    code = subprocess.call([*cmd, "-m", "omnibind", *args])
    if code:
        raise typer.Exit(code)


def _is_main_process() -> bool:
    """False on the ranks > 0 of a torchrun job (they train but do not print or evaluate)."""
    from omnibind.training.distributed import world_from_env

    return world_from_env().is_main


def _run_config(config: Path, out: Path, overrides: list[str], resume: bool) -> Any:
    """The config of a run: its own ``config.yaml`` when resuming without overrides, else CONFIG's."""
    from omnibind.config import config_from_dict, load_config

    if resume and (out / "config.yaml").exists() and not overrides:
        import yaml

        return config_from_dict(yaml.safe_load((out / "config.yaml").read_text()))
    return load_config(config, overrides)


def _train_seeds(
    cfg: Any, config: Path, out: Path, overrides: list[str], resume: bool, evaluate: bool, seeds: int
) -> None:
    """Train ``seeds`` runs under ``out``; every folder is checked before the first one is written.

    The data split depends on ``data.split_seed`` only, so every run is tested on the same items; the
    runs differ in ``train.seed`` (initialisation, data order, modality-dropout draws).
    """
    import copy

    from omnibind.evaluation.seeds import seed_dir
    from omnibind.training.trainer import check_run_dir

    base = cfg.train.seed
    folders = [seed_dir(out, k) for k in range(seeds)]
    continuing = [resume and (f / "checkpoints").exists() for f in folders]
    for folder, cont in zip(folders, continuing, strict=True):
        check_run_dir(folder, cont)  # an existing run is an error before anything is written
    tests = []
    for k, (folder, cont) in enumerate(zip(folders, continuing, strict=True)):
        own = cont and not overrides  # resuming with the run's own config.yaml, which has its seed
        run_cfg = _run_config(config, folder, overrides, True) if own else copy.deepcopy(cfg)
        if not own:
            run_cfg.train.seed = base + k
        typer.echo(f"seed {k + 1}/{seeds}: train.seed={run_cfg.train.seed} -> {folder}")
        test = _train_one(run_cfg, folder, cont, evaluate)
        if test is not None:
            tests.append(test)
    if tests:
        from omnibind.evaluation.seeds import aggregate, spread_note

        overall = aggregate(tests)["overall"]
        acc = overall["accuracy"]
        typer.echo(
            f"test accuracy over {acc['n']} seeds: {acc['mean']:.3f} ± {acc['std']:.3f}. "
            f"{spread_note(acc['n'])}"
        )
    typer.echo(f"{seeds} runs in {out}; compare them with `omnibind eval {out}` or `omnibind report {out}`")


def _train_one(cfg: Any, out: Path, resume: bool, evaluate: bool) -> dict[str, Any] | None:
    """Train one run into ``out``; returns its test metrics for a classify run (``None`` otherwise)."""
    from omnibind.training.trainer import train as run_training

    if cfg.task is not None:  # a supervised task: encoders + a fusion head
        from omnibind.errors import OmnibindError
        from omnibind.training.classify import train_classifier
        from omnibind.training.distributed import world_from_env

        if world_from_env().enabled:
            raise OmnibindError(
                "a classify run (task:) trains in one process; start it without torchrun / --nproc"
            )

        fitted = train_classifier(cfg, out, resume=resume, evaluate=evaluate)
        typer.echo(f"trained {fitted.steps} steps; model saved to {out / 'model'}")
        if fitted.test:
            typer.echo(f"test accuracy {fitted.test['overall']['accuracy']:.3f}")
        elif evaluate:
            _no_split("test")
        return fitted.test
    result = run_training(cfg, out, resume=resume)
    if not _is_main_process():
        return None
    speed = ""
    if result.timing.get("steps_timed"):
        speed = (
            f" ({result.timing['items_per_s']:.0f} items/s, "
            f"{100 * result.timing['data_wait_fraction']:.0f}% of step time waiting for data)"
        )
    typer.echo(f"trained {result.steps} steps{speed}; model saved to {out / 'model'}")
    if evaluate:
        from omnibind.cli.evaluate import NoSplitError, evaluate_run

        try:
            evaluate_run(
                out,
                data=None,
                out=out / "metrics.json",
                history=result.history,
                overwrite=True,
                device=cfg.train.device,
            )
        except NoSplitError as exc:
            _no_split(exc.split)
    return None


def _no_split(split: str) -> None:
    """One line for a run that trained and saved but has no items to evaluate on."""
    fraction = {"test": "data.test_fraction is 0 and ", "val": "data.val_fraction is 0 and "}.get(split, "")
    typer.echo(
        f"no '{split}' split ({fraction}no item has split '{split}'): skipped the final evaluation; "
        "evaluate with `omnibind eval RUN --data DATA`"
    )
