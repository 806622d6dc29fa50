"""A human report of a classifier evaluation over seeds: ``report.md`` plus PNG plots, in one folder.

``metrics`` is what ``omnibind eval`` writes for a classify run or a seeds folder::

    {"task": "classify", "head", "balance", "label", "modalities", "classes", "split",
     "runs": [{"path", "seed"}], "seeds": [per-run results],
     "aggregate": {"test": {"overall", "subsets"}, "robustness": {"mcar", "mnar"?}, "importance": {...}}}

where ``aggregate`` is :func:`omnibind.evaluation.seeds.aggregate` of the per-run results, so every
number is ``{"mean", "std", "n", "values"}``. Every fused number is shown beside the best unimodal one:
the single-modality subset of the same model with the highest mean accuracy.

Plots (each only when there is something to show): ``subsets.png`` (accuracy of every non-empty subset,
error bars = std over seeds), ``mcar.png`` (accuracy against each modality's missing rate, bands = std),
``importance.png`` (permutation, ablation and Shapley side by side per modality), ``mnar.png`` (clean vs
flipped missingness, with the drop), ``categories.png`` (per-item category shares).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omnibind.evaluation.fusion_plots import (
    IMPORTANCE_KINDS,
    plot_categories,
    plot_importance,
    plot_mcar,
    plot_mnar,
    plot_subsets,
)
from omnibind.evaluation.report import REPORT_NAME, _fmt, report_files
from omnibind.evaluation.seeds import mean_of, pm, spread_note, std_of
from omnibind.io import write_text_atomic

SUBSETS_PNG = "subsets.png"
MCAR_PNG = "mcar.png"
IMPORTANCE_PNG = "importance.png"
MNAR_PNG = "mnar.png"
CATEGORIES_PNG = "categories.png"
PLOTS = (SUBSETS_PNG, MCAR_PNG, IMPORTANCE_PNG, MNAR_PNG, CATEGORIES_PNG)
_METRICS = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("auroc", "AUROC"))


def balance_label(balance: str, modality_dropout: float) -> str:
    """How a run balanced its modalities, in words: ``none``, ``agm``, ``ogm_ge + dropout 0.2``."""
    parts = [balance] if balance else []
    if modality_dropout:
        parts.append(f"dropout {float(modality_dropout):g}")
    return " + ".join(parts) or "none"


def best_unimodal(subsets: Mapping[str, Mapping[str, Any]]) -> tuple[str, Mapping[str, Any]] | None:
    """The single-modality subset with the highest mean accuracy: ``(name, its metrics)``, or ``None``."""
    scored = [(mean_of(m.get("accuracy")), k) for k, m in subsets.items() if "+" not in k]
    scored = [(acc, k) for acc, k in scored if acc is not None]
    if not scored:
        return None
    name = max(scored)[1]
    return name, subsets[name]


def margin_text(fused: Any, unimodal: Any, n_seeds: int) -> tuple[str, str]:
    """(margin ``fused - unimodal`` in points, whether it exceeds twice the fused score's std)."""
    a, b = mean_of(fused), mean_of(unimodal)
    if a is None or b is None:
        return "–", "–"
    margin = a - b
    if n_seeds < 2:
        return f"{100 * margin:+.1f}", "n/a (one seed)"
    return f"{100 * margin:+.1f}", "yes" if margin > 2 * std_of(fused) else "no"


def _overall_section(test: Mapping[str, Any], n_seeds: int) -> tuple[str, str]:
    """(summary line, Markdown table) of the fused score beside the best single modality of the model."""
    overall = test.get("overall", {})
    best = best_unimodal(test.get("subsets", {}))
    rows = [("fused (each item's own modalities)", overall)]
    if best is not None:
        rows.append((f"best single modality: `{best[0]}`", best[1]))
    lines = ["| | accuracy | macro-F1 | AUROC | n |", "|---|---:|---:|---:|---:|"]
    for name, m in rows:
        cells = [pm(m.get(k)) for k, _ in _METRICS] + [_fmt(mean_of(m.get("n")), 0)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if best is None:
        return f"- Fused accuracy {pm(overall.get('accuracy'))}.", "\n".join(lines)
    margin, beyond = margin_text(overall.get("accuracy"), best[1].get("accuracy"), n_seeds)
    lines.append(f"| margin (points) | {margin} | | | |")
    summary = (
        f"- Fused accuracy {pm(overall.get('accuracy'))} vs {pm(best[1].get('accuracy'))} for the best "
        f"single modality (`{best[0]}`): {margin} points; beyond 2 std of the fused score: {beyond}."
    )
    return summary, "\n".join(lines)


def _subsets_table(subsets: Mapping[str, Mapping[str, Any]]) -> str:
    lines = ["| subset | accuracy | macro-F1 | AUROC | n |", "|---|---:|---:|---:|---:|"]
    for name, m in subsets.items():
        cells = [pm(m.get(k)) for k, _ in _METRICS] + [_fmt(mean_of(m.get("n")), 0)]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mcar_table(mcar: Mapping[str, list[Mapping[str, Any]]]) -> str:
    names = [m for m, curve in mcar.items() if curve]
    if not names:
        return ""
    rates = [point["rate"] for point in mcar[names[0]]]
    lines = [
        "| missing rate | " + " | ".join(f"`{m}`" for m in names) + " |",
        "|---:|" + "---:|" * len(names),
    ]
    for i, rate in enumerate(rates):
        cells = [pm(mcar[m][i].get("accuracy")) if i < len(mcar[m]) else "–" for m in names]
        lines.append(f"| {float(rate):.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mnar_section(mnar: Mapping[str, Any], best: tuple[str, Any] | None) -> tuple[str, str]:
    """(summary line, Markdown) of the MNAR test: clean vs flipped, the drop, and the items that moved."""
    clean, flipped = mnar.get("clean", {}), mnar.get("flipped", {})
    lines = ["| test missingness | accuracy | macro-F1 | AUROC |", "|---|---:|---:|---:|"]
    for name, m in (("clean (none)", clean), ("flipped to another class", flipped)):
        lines.append(f"| {name} | " + " | ".join(pm(m.get(k)) for k, _ in _METRICS) + " |")
    lines.append(f"| drop (clean - flipped) | {pm(mnar.get('drop'))} | | |")
    affected = mnar.get("affected") or {}
    if affected:
        lines.append(
            f"| only the items that lost it: clean / flipped | {pm(affected.get('clean_accuracy'))} / "
            f"{pm(affected.get('flipped_accuracy'))} | | |"
        )
    if best is not None:
        lines.append(
            f"| best single modality `{best[0]}` (no missingness) | {pm(best[1].get('accuracy'))} | | |"
        )
    modality, trained = mnar.get("modality"), mnar.get("trained_label")
    setting = f"`{modality}` missing in training mostly for class `{trained}`" if trained else f"`{modality}`"
    rate = mean_of(mnar.get("rate"))
    rate_text = "" if rate is None else f" for {100 * rate:.0f}% of the items"
    setting += f"; at test it goes missing{rate_text} of class `{mnar.get('flipped_label')}` instead"
    dropped = mean_of(mnar.get("dropped"))
    if dropped is not None:
        setting += f" ({dropped:.0f} test items)"
    drop = mean_of(mnar.get("drop"))
    summary = f"- Missing not at random ({setting}): accuracy drops by {pm(mnar.get('drop'))}"
    summary += "." if drop is None else f" ({100 * drop:.1f} points)."
    return summary, f"Setting: {setting}.\n\n" + "\n".join(lines)


_IMPORTANCE_NOTE = (
    "Accuracy lost when a modality is shuffled across items (permutation: reliance) or removed through the "
    "presence mask (ablation), and its Shapley share of the accuracy over every subset (how to read them: "
    "omnibind's docs/diagnostics.md)."
)


def _shapley_total(importance: Mapping[str, Any]) -> str:
    """A check a reader can do: the Shapley values add up to accuracy(all) - accuracy(none)."""
    full, empty = mean_of(importance.get("accuracy")), mean_of(importance.get("empty_accuracy"))
    values = [mean_of(v) for v in (importance.get("shapley") or {}).values()]
    if full is None or empty is None or not values or any(v is None for v in values):
        return ""
    total = sum(v for v in values if v is not None)
    return (
        f"The Shapley values add up to {total:.3f}: the accuracy with every modality ({full:.3f}) minus the "
        f"accuracy with none, the head's empty-state guess ({empty:.3f})."
    )


def _importance_table(importance: Mapping[str, Any]) -> str:
    names = list(dict.fromkeys(m for k in IMPORTANCE_KINDS for m in importance.get(k, {})))
    kinds = [k for k in IMPORTANCE_KINDS if importance.get(k)]
    if not names or not kinds:
        return ""
    lines = ["| modality | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]
    for m in names:
        lines.append(f"| `{m}` | " + " | ".join(pm(importance[k].get(m)) for k in kinds) + " |")
    return "\n".join(lines)


def _categories_table(categories: Mapping[str, Any]) -> str:
    shares, counts = categories.get("shares", {}), categories.get("counts", {})
    if not shares:
        return ""
    lines = ["| category | items | share |", "|---|---:|---:|"]
    for name in shares:
        lines.append(f"| {name} | {pm(counts.get(name), 1)} | {pm(shares[name])} |")
    return "\n".join(lines)


def _importance_summary(importance: Mapping[str, Any]) -> str:
    shapley = {m: mean_of(v) for m, v in importance.get("shapley", {}).items()}
    shapley = {m: v for m, v in shapley.items() if v is not None}
    lines = []
    if shapley:
        top = max(shapley, key=shapley.__getitem__)
        lines.append(f"- Most important modality (Shapley): `{top}` ({pm(importance['shapley'][top])}).")
    shares = {k: mean_of(v) for k, v in importance.get("categories", {}).get("shares", {}).items()}
    shares = {k: v for k, v in shares.items() if v is not None}
    if shares:
        top = max(shares, key=shares.__getitem__)
        lines.append(f"- Largest item category: {top} ({100 * shares[top]:.0f}% of items).")
    return "\n".join(lines)


def _mcar_summary(mcar: Mapping[str, list[Mapping[str, Any]]]) -> str:
    losses = {}
    for name, curve in mcar.items():
        if (
            curve
            and mean_of(curve[0].get("accuracy")) is not None
            and mean_of(curve[-1].get("accuracy")) is not None
        ):
            losses[name] = (mean_of(curve[0]["accuracy"]) or 0.0) - (mean_of(curve[-1]["accuracy"]) or 0.0)
    if not losses:
        return ""
    worst = max(losses, key=losses.__getitem__)
    return (
        f"- Missing completely at random: losing `{worst}` from every item costs the most "
        f"({100 * losses[worst]:.1f} points at missing rate {float(mcar[worst][-1]['rate']):.1f})."
    )


def _per_seed_table(metrics: Mapping[str, Any]) -> str:
    lines = ["| run | train.seed | accuracy | macro-F1 | AUROC |", "|---|---:|---:|---:|---:|"]
    for run, result in zip(metrics.get("runs", []), metrics.get("seeds", []), strict=True):
        overall = result.get("test", {}).get("overall", {})
        cells = [_fmt(overall.get(k)) for k, _ in _METRICS]
        lines.append(f"| `{Path(run['path']).name}` | {run['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_fusion_report(
    out_dir: str | Path, metrics: Mapping[str, Any], title: str = "omnibind report", name: str = REPORT_NAME
) -> Path:
    """Write ``report.md`` and its plots for a classifier evaluated over one or more seeds (``NAME.md``
    and ``NAME.<plot>.png`` for another ``name``, see :func:`omnibind.evaluation.report.report_files`).

    Args:
        out_dir: the folder (created if needed); PNGs are linked relatively from the Markdown.
        metrics: what ``omnibind eval`` writes for classify runs (see the module docstring); only
            ``aggregate.test`` is required, ``robustness`` and ``importance`` add their sections.
        title: the report's heading.
        name: the report's file stem.

    Returns:
        the path of the Markdown file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, files = report_files(name, PLOTS)
    agg = metrics.get("aggregate", {})
    test, robust, importance = agg.get("test", {}), agg.get("robustness") or {}, agg.get("importance") or {}
    n_seeds = len(metrics.get("seeds", [])) or 1
    best = best_unimodal(test.get("subsets", {}))
    summary, overall_table = _overall_section(test, n_seeds)
    summaries = [summary]
    body: list[str] = ["## Overall", overall_table]
    if test.get("subsets"):
        body += ["## Every subset of modalities", _subsets_table(test["subsets"])]
        if plot_subsets(test, out_dir / files[SUBSETS_PNG]):
            body.append(f"![accuracy by subset]({files[SUBSETS_PNG]})")
    if robust.get("mcar"):
        summaries.append(_mcar_summary(robust["mcar"]))
        body += ["## Missing completely at random", "Accuracy when a share of the items lose one modality."]
        body.append(_mcar_table(robust["mcar"]))
        if plot_mcar(robust["mcar"], best, out_dir / files[MCAR_PNG]):
            body.append(f"![MCAR curves]({files[MCAR_PNG]})")
    if robust.get("mnar"):
        line, table = _mnar_section(robust["mnar"], best)
        summaries.append(line)
        body += ["## Missing not at random", table]
        if plot_mnar(robust["mnar"], out_dir / files[MNAR_PNG]):
            body.append(f"![MNAR clean vs flipped]({files[MNAR_PNG]})")
    if importance:
        summaries.append(_importance_summary(importance))
        body += ["## Modality importance", _IMPORTANCE_NOTE, _importance_table(importance)]
        total = _shapley_total(importance)
        if total:
            body.append(total)
        if plot_importance(importance, out_dir / files[IMPORTANCE_PNG]):
            body.append(f"![modality importance]({files[IMPORTANCE_PNG]})")
        if importance.get("categories"):
            body += ["### Per-item categories", _categories_table(importance["categories"])]
            if plot_categories(importance["categories"], out_dir / files[CATEGORIES_PNG]):
                body.append(f"![item categories]({files[CATEGORIES_PNG]})")
    body += ["## Runs", _per_seed_table(metrics)]
    setting = ", ".join(
        f"{key} `{metrics[key]}`"
        for key in ("head", "balance", "label", "split")
        if metrics.get(key) is not None
    )
    intro = [
        f"# {title}",
        f"{setting}; modalities {', '.join(metrics.get('modalities', []))}. {spread_note(n_seeds)}",
    ]
    parts = [*intro, "## Summary", "\n".join(s for s in summaries if s), *body]
    return write_text_atomic(out_dir / markdown, "\n\n".join(parts) + "\n")
