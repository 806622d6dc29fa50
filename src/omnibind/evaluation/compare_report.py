"""Several runs side by side: one table and one grouped bar plot (``omnibind report RUN... --out DIR``).

Each compared path is a run folder or a seeds folder (``seed-0``, ``seed-1``, ... runs); its numbers are
the mean ± std over its seeds of the test metrics each run wrote at the end of training (``metrics.json``).
Classify runs are compared on accuracy and macro-F1, and every run's margin over the best *unimodal run*
among those compared (a run whose config has one modality) is shown with whether it exceeds twice the
run's own std; the best single-modality subset of each run's own model is shown too. Embedding runs get
a retrieval table (R@1 of every ordered pair of modalities).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnibind.errors import OmnibindError
from omnibind.evaluation.fusion_plots import plot_groups
from omnibind.evaluation.fusion_report import balance_label, best_unimodal, margin_text
from omnibind.evaluation.report import _fmt
from omnibind.evaluation.seeds import aggregate, find_runs, mean_of, pm, spread_note
from omnibind.io import write_text_atomic
from omnibind.model import CONFIG_NAME, model_dir

COMPARISON_PNG = "comparison.png"
CLASSIFIER_FORMAT = "omnibind-classifier/1"


@dataclass
class RunResults:
    """What one compared path holds: its setting and its per-seed and aggregated test metrics."""

    name: str
    path: Path
    kind: str  # "classify" or "embedding"
    modalities: list[str]
    head: str
    balance: str
    label: str
    classes: list[str] | dict[str, list[str]]  # {label: classes} for a multi-task classifier
    seeds: list[int]
    results: list[dict[str, Any]]  # per seed: test metrics (classify) or {"retrieval": ...}
    aggregate: dict[str, Any]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise OmnibindError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise OmnibindError(f"{path}: expected a JSON object")
    return data


def load_run_results(path: str | Path, name: str = "") -> RunResults:
    """Read a run or a seeds folder: its config (from ``model/config.json``) and each seed's ``metrics.json``.

    Raises:
        OmnibindError: ``path`` is not a run or a seeds folder; a run has no ``metrics.json`` (trained with
            ``--no-eval``) or one without test results.
    """
    path = Path(path)
    runs = find_runs(path)
    results, seeds = [], []
    meta = _read_json(model_dir(runs[0]) / CONFIG_NAME)
    cfg = meta.get("config", {})
    classify = meta.get("format") == CLASSIFIER_FORMAT
    for run in runs:
        metrics_path = run / "metrics.json"
        if not metrics_path.exists():
            raise OmnibindError(
                f"{run} has no metrics.json (trained with --no-eval?); write it with "
                f"`omnibind eval {run} --out {run}`"
            )
        metrics = _read_json(metrics_path)
        key = "test" if classify else "retrieval"
        if not isinstance(metrics.get(key), dict):
            raise OmnibindError(
                f"{metrics_path} has no '{key}' results; rewrite it with `omnibind eval {run} --out {run}`"
            )
        results.append(metrics["test"] if classify else {"retrieval": metrics["retrieval"]})
        run_meta = _read_json(model_dir(run) / CONFIG_NAME).get("config", {})
        seeds.append(int(run_meta.get("train", {}).get("seed", 0)))
    try:
        summary = aggregate(results)
    except ValueError as exc:
        raise OmnibindError(f"{path}: the seeds' metrics.json files do not match ({exc})") from exc
    task = cfg.get("task") or {}
    return RunResults(
        name=name or path.name or str(path),
        path=path,
        kind="classify" if classify else "embedding",
        modalities=list(cfg.get("modalities", {})),
        head=str(task.get("head", "")) if classify else str(cfg.get("objective", {}).get("name", "")),
        balance=balance_label(str(task.get("balance", "")), float(task.get("modality_dropout", 0.0)))
        if classify
        else "",
        label=_label_text(task.get("label", "")),
        classes=task.get("classes", []),
        seeds=seeds,
        results=results,
        aggregate=summary,
    )


def _label_text(label: Any) -> str:
    """``mark+tone``, or ``shape, colour`` for a multi-task classifier."""
    return ", ".join(str(x) for x in label) if isinstance(label, list) else str(label)


def check_comparable(runs: Sequence[RunResults]) -> None:
    """All classify or all embedding runs; classify runs with the same label and classes.

    Raises:
        OmnibindError: naming the two runs that differ and how.
    """
    first = runs[0]
    for run in runs[1:]:
        if run.kind != first.kind:
            raise OmnibindError(
                f"cannot compare {first.kind} run '{first.name}' with {run.kind} run '{run.name}'"
            )
        if run.kind == "classify" and run.label != first.label:
            raise OmnibindError(
                f"'{run.name}' predicts '{run.label}' but '{first.name}' predicts '{first.label}': "
                "compare runs of one task"
            )
        if run.kind == "classify" and run.classes != first.classes:
            raise OmnibindError(
                f"'{run.name}' has classes {run.classes} but '{first.name}' has {first.classes}: "
                "compare runs of one task"
            )


def best_unimodal_run(runs: Sequence[RunResults]) -> RunResults | None:
    """The compared run with one modality and the highest mean test accuracy (``None`` if there is none)."""
    single = [r for r in runs if len(r.modalities) == 1 and mean_of(_accuracy(r)) is not None]
    return max(single, key=lambda r: mean_of(_accuracy(r)) or 0.0) if single else None


def _accuracy(run: RunResults) -> Any:
    return run.aggregate.get("overall", {}).get("accuracy")


def _classify_table(runs: Sequence[RunResults], reference: RunResults | None) -> str:
    head = (
        "| run | head | balance | modalities | seeds | test items | accuracy | macro-F1 "
        "| vs best unimodal run (points) | > 2 std | own best single modality |"
    )
    lines = [head, "|---|---|---|---|---:|---:|---:|---:|---:|---|---|"]
    for run in runs:
        overall = run.aggregate.get("overall", {})
        if reference is None:
            margin, beyond = "–", "–"
        elif run is reference:
            margin, beyond = "reference", "–"
        else:
            margin, beyond = margin_text(overall.get("accuracy"), _accuracy(reference), len(run.results))
        own = best_unimodal(run.aggregate.get("subsets", {}))
        own_text = f"`{own[0]}` {pm(own[1].get('accuracy'))}" if own and len(run.modalities) > 1 else "–"
        cells = [
            f"`{run.name}`",
            run.head,
            run.balance,
            ", ".join(run.modalities),
            str(len(run.results)),
            _fmt(mean_of(overall.get("n")), 0),
            pm(overall.get("accuracy")),
            pm(overall.get("macro_f1")),
            margin,
            beyond,
            own_text,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pairs(runs: Sequence[RunResults]) -> list[str]:
    keys = [k for r in runs for k in r.aggregate.get("retrieval", {}) if "+" not in k.split("->")[0]]
    return list(dict.fromkeys(keys))


def _retrieval_table(runs: Sequence[RunResults]) -> str:
    pairs = _pairs(runs)
    lines = ["| run | objective | seeds | " + " | ".join(f"`{p}`" for p in pairs) + " |"]
    lines.append("|---|---|---:|" + "---:|" * len(pairs))
    for run in runs:
        retrieval = run.aggregate.get("retrieval", {})
        cells = [pm(retrieval.get(p, {}).get("r@1")) for p in pairs]
        lines.append(f"| `{run.name}` | {run.head} | {len(run.results)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_comparison_report(
    out_dir: str | Path, runs: Sequence[RunResults], title: str = "omnibind comparison"
) -> Path:
    """Write ``report.md`` (the table) and ``comparison.png`` (grouped bars) comparing ``runs``.

    Args:
        out_dir: the folder (created if needed).
        runs: from :func:`load_run_results`, all classify or all embedding (see :func:`check_comparable`).
        title: the report's heading.

    Returns:
        the path of ``report.md``.
    """
    if not runs:
        raise OmnibindError("nothing to compare: give at least one run")
    check_comparable(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = sorted({len(r.results) for r in runs})
    spread = (
        spread_note(counts[0]) if len(counts) == 1 else "Mean ± sample std (ddof=1) over each run's seeds."
    )
    single = [f"`{r.name}`" for r in runs if len(r.results) == 1]
    if single and len(counts) > 1:
        spread += f" {', '.join(single)}: one seed, so its ± 0 is not a measured spread."
    parts = [f"# {title}", spread]
    if runs[0].kind == "classify":
        reference = best_unimodal_run(runs)
        if reference is None:
            note = (
                "No compared run uses one modality only; the last column gives each model's own best subset."
            )
        else:
            note = (
                f"Best unimodal run: `{reference.name}` ({', '.join(reference.modalities)}), accuracy "
                f"{pm(_accuracy(reference))}; margins are in accuracy points, '> 2 std' compares the margin "
                "with twice the run's own std. A run is tested on the test items that have at least one of "
                "its modalities, so a unimodal run may see fewer items (the 'test items' column)."
            )
        parts += ["## Summary", note, "## Runs", _classify_table(runs, reference)]
        series = {
            "accuracy": [_accuracy(r) for r in runs],
            "macro-F1": [r.aggregate.get("overall", {}).get("macro_f1") for r in runs],
        }
        line = None if reference is None else (f"best unimodal run ({reference.name})", _accuracy(reference))
        names = [r.name for r in runs]
        plot_groups(names, series, "score", "test accuracy and macro-F1", out_dir / COMPARISON_PNG, line)
    else:
        pairs = _pairs(runs)
        parts += ["## Retrieval R@1", _retrieval_table(runs)]
        series = {
            r.name: [r.aggregate.get("retrieval", {}).get(p, {}).get("r@1") for p in pairs] for r in runs
        }
        plot_groups(pairs, series, "R@1", "retrieval R@1 per pair", out_dir / COMPARISON_PNG)
    parts.append(f"![comparison]({COMPARISON_PNG})")
    parts += ["## Folders", "\n".join(f"- `{r.name}`: {r.path} (train.seed {r.seeds})" for r in runs)]
    return write_text_atomic(out_dir / "report.md", "\n\n".join(parts) + "\n")
