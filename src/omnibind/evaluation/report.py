"""A human report of an evaluation: ``report.md`` plus PNG plots, written atomically into one folder.

``metrics`` is ``{"retrieval": {"a->b": rank metrics, ...}, "zero_shot": {"name/target": {"accuracy", "n"}},
...}``; any other key is shown as a JSON block at the end. ``history`` is the list of rows of
``metrics.jsonl`` (each with ``step`` and some of ``train/loss``, ``lr``, ``logit_scale``, ``val/...``).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omnibind.evaluation.retrieval import retrieval_matrix
from omnibind.io import write_bytes_atomic, write_text_atomic

TRAINING_PNG = "training.png"
RETRIEVAL_PNG = "retrieval_r1.png"
ZERO_SHOT_PNG = "zero_shot.png"
_TRAIN_KEYS = ("train/loss", "lr", "logit_scale")
REPORT_NAME = "report"


def report_files(name: str, plots: Sequence[str]) -> tuple[str, dict[str, str]]:
    """The file names of a report called ``name``: ``(markdown, {plot: file})``.

    The default name ``report`` gives ``report.md`` and the plots' plain names (``retrieval_r1.png``);
    any other name prefixes them (``b.md``, ``b.retrieval_r1.png``), so that reports of several
    evaluations can share a folder.
    """
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"a report name is a plain file stem, got {name!r}")
    prefix = "" if name == REPORT_NAME else f"{name}."
    return f"{name}.md", {p: prefix + p for p in plots}


def report_name_for(metrics_path: Path) -> str:
    """The report name of an evaluation written to ``metrics_path``: ``metrics.json`` -> ``report``
    (``report.md``), ``a.json`` -> ``a`` (``a.md``)."""
    return REPORT_NAME if metrics_path.stem == "metrics" else metrics_path.stem


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fmt(value: Any, digits: int = 3) -> str:
    if _is_number(value):
        return str(value) if isinstance(value, int) else f"{value:.{digits}f}"
    return "–"


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    write_bytes_atomic(path, buf.getvalue())


def _new_figure(width: float, height: float) -> Any:
    # A bare Figure on the Agg canvas: no pyplot global state, so it is safe in servers and threads.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _points(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of the rows where ``key`` was logged as a finite number."""
    points = [
        (row.get("step", i), row[key])
        for i, row in enumerate(history)
        if _is_number(row.get(key)) and _is_number(row.get("step", i))
    ]
    return [float(s) for s, _ in points], [float(v) for _, v in points]


def _panels(history: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """(title, keys) per subplot: loss, lr, logit_scale, each summary ``val/`` metric, and one panel that
    overlays the per-combination ``val/q->t/...`` metrics (one panel each would be dozens)."""
    keys = [k for k in _TRAIN_KEYS if _points(history, k)[0]]
    val = sorted({k for row in history for k in row if k.startswith("val/") and _points(history, k)[0]})
    panels = [(k, [k]) for k in keys]
    panels += [(k, [k]) for k in val if "->" not in k]
    per_combination = [k for k in val if "->" in k]
    if per_combination:
        panels.append(("val per query->target", per_combination))
    return panels


def _plot_training(history: Sequence[Mapping[str, Any]], path: Path) -> bool:
    panels = _panels(history)
    if not panels:
        return False
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = _new_figure(4.5 * ncols, 3.2 * nrows)
    for i, (title, keys) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for key in keys:
            steps, values = _points(history, key)
            ax.plot(steps, values, marker="." if len(steps) < 50 else None, label=key[len("val/") :])
        if len(keys) > 1:
            ax.legend(fontsize=6, ncols=2 if len(keys) > 8 else 1)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    return True


def _plot_retrieval(retrieval: Mapping[str, Mapping[str, Any]], path: Path) -> bool:
    import numpy as np

    queries, targets, table = retrieval_matrix(retrieval, "r@1")
    if not queries:
        return False
    fig = _new_figure(1.2 + 0.9 * len(targets), 1.0 + 0.45 * len(queries))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(np.ma.masked_invalid(table), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(targets)), labels=targets, rotation=45, ha="right")
    ax.set_yticks(range(len(queries)), labels=queries)
    ax.set_xlabel("target")
    ax.set_ylabel("query")
    ax.set_title("retrieval R@1")
    for r in range(len(queries)):
        for c in range(len(targets)):
            if math.isfinite(table[r, c]):
                colour = "black" if table[r, c] > 0.6 else "white"  # readable on viridis
                ax.text(c, r, f"{table[r, c]:.2f}", ha="center", va="center", color=colour, fontsize=8)
    fig.colorbar(image, ax=ax, label="R@1")
    _save(fig, path)
    return True


def _plot_zero_shot(zero_shot: Mapping[str, Mapping[str, Any]], path: Path) -> bool:
    names = [name for name, value in zero_shot.items() if _is_number(value.get("accuracy"))]
    if not names:
        return False
    fig = _new_figure(max(4.0, 0.8 * len(names) + 1.5), 3.5)
    ax = fig.add_subplot(1, 1, 1)
    accuracies = [float(zero_shot[name]["accuracy"]) for name in names]
    bars = ax.bar(range(len(names)), accuracies)
    ax.bar_label(bars, labels=[f"{a:.2f}" for a in accuracies], fontsize=8)
    ax.set_xticks(range(len(names)), labels=names, rotation=45, ha="right")
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title("zero-shot accuracy")
    _save(fig, path)
    return True


def _summary(retrieval: Mapping[str, Mapping[str, Any]], zero_shot: Mapping[str, Mapping[str, Any]]) -> str:
    lines = []
    scored = {k: v["r@1"] for k, v in retrieval.items() if _is_number(v.get("r@1"))}
    pairs = {k: v for k, v in scored.items() if "+" not in k.split("->")[0]}
    composed = {k: v for k, v in scored.items() if k not in pairs}
    if pairs:
        best, worst = max(pairs, key=pairs.__getitem__), min(pairs, key=pairs.__getitem__)
        mean = sum(pairs.values()) / len(pairs)
        lines.append(f"- Pairwise retrieval over {len(pairs)} pairs: mean R@1 {mean:.3f}.")
        lines.append(
            f"- Best pair: `{best}` (R@1 {pairs[best]:.3f}); worst pair: `{worst}` (R@1 {pairs[worst]:.3f})."
        )
    if composed:
        best = max(composed, key=composed.__getitem__)
        lines.append(f"- Best composed query: `{best}` (R@1 {composed[best]:.3f}) of {len(composed)}.")
    accs = {k: v["accuracy"] for k, v in zero_shot.items() if _is_number(v.get("accuracy"))}
    if accs:
        best, worst = max(accs, key=accs.__getitem__), min(accs, key=accs.__getitem__)
        lines.append(f"- Zero-shot: best `{best}` ({accs[best]:.3f}), worst `{worst}` ({accs[worst]:.3f}).")
    return "\n".join(lines) if lines else "No retrieval or zero-shot results."


def _retrieval_table(retrieval: Mapping[str, Mapping[str, Any]]) -> str:
    recall = {k for v in retrieval.values() for k in v if k.startswith("r@")}
    recall = sorted(recall, key=lambda k: int(k[2:]))
    columns = [*recall, "mrr", "median_rank", "n"]
    head = "| query->target | " + " | ".join(columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    rows = []
    for key, value in retrieval.items():
        cells = [_fmt(value.get(c), 1 if c == "median_rank" else 3) for c in columns]
        rows.append(f"| `{key}` | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def _zero_shot_table(zero_shot: Mapping[str, Mapping[str, Any]]) -> str:
    rows = [f"| `{k}` | {_fmt(v.get('accuracy'))} | {_fmt(v.get('n'))} |" for k, v in zero_shot.items()]
    return "\n".join(["| task | accuracy | n |", "|---|---:|---:|", *rows])


def write_report(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]] | None = None,
    title: str = "omnibind report",
    extra_sections: Sequence[tuple[str, str]] | None = None,
    name: str = REPORT_NAME,
) -> Path:
    """Write ``report.md`` and its plots into ``out_dir`` (``NAME.md`` and ``NAME.<plot>.png`` for another
    ``name``, see :func:`report_files`).

    Plots (each only when there is something to show): ``training.png`` (train loss, lr, logit_scale and
    every ``val/...`` metric against step), ``retrieval_r1.png`` (R@1 heatmap, queries including composed
    ones x targets, values in the cells) and ``zero_shot.png`` (accuracy bars). The Markdown holds a
    summary, the retrieval table, the zero-shot table, the plots (relative links), ``extra_sections``
    verbatim and every other key of ``metrics`` as JSON.

    Args:
        out_dir: the folder (created if needed).
        metrics: ``{"retrieval": {...}, "zero_shot": {...}, ...}``.
        history: rows of ``metrics.jsonl``.
        title: the report's heading.
        extra_sections: ``(heading, markdown body)`` pairs appended as they are.
        name: the report's file stem.

    Returns:
        the path of the Markdown file.

    Example:
        >>> import tempfile
        >>> m = {"retrieval": {"a->b": {"r@1": 1.0, "mrr": 1.0, "median_rank": 1.0, "n": 2}}}
        >>> write_report(tempfile.mkdtemp(), m).name
        'report.md'
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, files = report_files(name, (RETRIEVAL_PNG, ZERO_SHOT_PNG, TRAINING_PNG))
    retrieval = metrics.get("retrieval") or {}
    zero_shot = metrics.get("zero_shot") or {}
    parts = [f"# {title}", "## Summary", _summary(retrieval, zero_shot)]
    if retrieval:
        parts += ["## Retrieval", _retrieval_table(retrieval)]
        if _plot_retrieval(retrieval, out_dir / files[RETRIEVAL_PNG]):
            parts.append(f"![retrieval R@1]({files[RETRIEVAL_PNG]})")
    if zero_shot:
        parts += ["## Zero-shot classification", _zero_shot_table(zero_shot)]
        if _plot_zero_shot(zero_shot, out_dir / files[ZERO_SHOT_PNG]):
            parts.append(f"![zero-shot accuracy]({files[ZERO_SHOT_PNG]})")
    if history and _plot_training(history, out_dir / files[TRAINING_PNG]):
        parts += ["## Training", f"![training curves]({files[TRAINING_PNG]})"]
    for heading, body in extra_sections or []:
        parts += [f"## {heading}", body]
    others = {k: v for k, v in metrics.items() if k not in ("retrieval", "zero_shot")}
    if others:
        dumped = json.dumps(others, indent=2, ensure_ascii=False, default=str)
        parts += ["## Other results", f"```json\n{dumped}\n```"]
    return write_text_atomic(out_dir / markdown, "\n\n".join(parts) + "\n")
