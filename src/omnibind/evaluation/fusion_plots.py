"""The PNG plots of the classifier reports: bars with error bars and curves with bands, std over seeds.

Each ``plot_*`` function takes aggregated results (numbers as ``{"mean", "std", "n", "values"}``, see
:mod:`omnibind.evaluation.seeds`; plain numbers work too, with no spread), writes one PNG atomically and
returns whether there was anything to draw. Figures are bare ``Figure`` objects on the Agg canvas (no
pyplot state), as in :mod:`omnibind.evaluation.report`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omnibind.evaluation.report import _new_figure, _save
from omnibind.evaluation.seeds import mean_of, pm, std_of

IMPORTANCE_KINDS = ("permutation", "ablation", "shapley")


def plot_subsets(test: Mapping[str, Any], path: Path) -> bool:
    subsets = {k: m for k, m in test.get("subsets", {}).items() if mean_of(m.get("accuracy")) is not None}
    if not subsets:
        return False
    names = list(subsets)
    means = [mean_of(subsets[k]["accuracy"]) or 0.0 for k in names]
    stds = [std_of(subsets[k]["accuracy"]) for k in names]
    colours = ["tab:blue" if "+" not in k else "tab:orange" for k in names]
    fig = _new_figure(max(4.5, 0.6 * len(names) + 2.0), 3.8)
    ax = fig.add_subplot(1, 1, 1)
    bars = ax.bar(range(len(names)), means, yerr=stds, capsize=3, color=colours)
    ax.bar_label(bars, labels=[f"{m:.2f}" for m in means], fontsize=7, padding=2)
    fused = mean_of(test.get("overall", {}).get("accuracy"))
    if fused is not None:
        ax.axhline(fused, color="black", linestyle="--", linewidth=1, label="fused, own modalities")
        ax.legend(fontsize=7, loc="lower right")
    ax.set_xticks(range(len(names)), labels=names, rotation=45, ha="right")
    ax.set_ylim(0.0, 1.1)
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy by modality subset (blue: one modality)")
    _save(fig, path)
    return True


def plot_mcar(mcar: Mapping[str, list[Mapping[str, Any]]], best: tuple[str, Any] | None, path: Path) -> bool:
    curves = {m: [p for p in c if mean_of(p.get("accuracy")) is not None] for m, c in mcar.items()}
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return False
    fig = _new_figure(5.5, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    for name, points in curves.items():
        rates = [float(p["rate"]) for p in points]
        means = [mean_of(p["accuracy"]) or 0.0 for p in points]
        stds = [std_of(p["accuracy"]) for p in points]
        (line,) = ax.plot(rates, means, marker=".", label=name)
        lower = [m - s for m, s in zip(means, stds, strict=True)]
        upper = [m + s for m, s in zip(means, stds, strict=True)]
        ax.fill_between(rates, lower, upper, color=line.get_color(), alpha=0.2)
    if best is not None and mean_of(best[1].get("accuracy")) is not None:
        label = f"best single modality ({best[0]})"
        ax.axhline(mean_of(best[1]["accuracy"]) or 0.0, color="grey", linestyle=":", label=label)
    ax.set_xlabel("share of items missing the modality (MCAR)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0.0, 1.05)
    ax.set_title("accuracy against each modality's missing rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def plot_mnar(mnar: Mapping[str, Any], path: Path) -> bool:
    """Clean vs flipped accuracy on every test item, and on the items that lost the modality (if given)."""
    affected = mnar.get("affected") or {}
    groups = [
        ("all test items", mnar.get("clean", {}).get("accuracy"), mnar.get("flipped", {}).get("accuracy")),
        ("items that lost it", affected.get("clean_accuracy"), affected.get("flipped_accuracy")),
    ]
    groups = [g for g in groups if mean_of(g[1]) is not None and mean_of(g[2]) is not None]
    if not groups:
        return False
    fig = _new_figure(2.0 + 2.0 * len(groups), 3.5)
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, colour) in enumerate((("clean", "tab:green"), ("flipped", "tab:red"))):
        values = [g[1 + i] for g in groups]
        means = [mean_of(v) or 0.0 for v in values]
        xs = [j + (i - 0.5) * 0.4 for j in range(len(groups))]
        bars = ax.bar(xs, means, 0.4, yerr=[std_of(v) for v in values], capsize=4, color=colour, label=label)
        ax.bar_label(bars, labels=[f"{m:.3f}" for m in means], fontsize=8, padding=2)
    ax.set_xticks(range(len(groups)), labels=[g[0] for g in groups])
    ax.set_ylim(0.0, 1.15)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"MNAR: clean vs flipped test missingness (drop {pm(mnar.get('drop'))})", fontsize=9)
    _save(fig, path)
    return True


def plot_importance(importance: Mapping[str, Any], path: Path) -> bool:
    kinds = [k for k in IMPORTANCE_KINDS if importance.get(k)]
    names = list(dict.fromkeys(m for k in kinds for m in importance[k]))
    if not kinds or not names:
        return False
    width = 0.8 / len(kinds)
    fig = _new_figure(max(4.5, 1.1 * len(names) + 2.0), 3.6)
    ax = fig.add_subplot(1, 1, 1)
    for i, kind in enumerate(kinds):
        xs = [j + (i - (len(kinds) - 1) / 2) * width for j in range(len(names))]
        values = [importance[kind].get(m) for m in names]
        means = [mean_of(v) or 0.0 for v in values]
        ax.bar(xs, means, width, yerr=[std_of(v) for v in values], capsize=2, label=kind)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(names)), labels=names)
    ax.set_ylabel("accuracy lost / contributed")
    ax.set_title("modality importance")
    ax.legend(fontsize=7)
    _save(fig, path)
    return True


def plot_categories(categories: Mapping[str, Any], path: Path) -> bool:
    shares = {k: v for k, v in categories.get("shares", {}).items() if mean_of(v) is not None}
    if not shares:
        return False
    names = list(shares)
    fig = _new_figure(5.0, 0.4 * len(names) + 1.2)
    ax = fig.add_subplot(1, 1, 1)
    means = [mean_of(shares[k]) or 0.0 for k in names]
    bars = ax.barh(range(len(names)), means, xerr=[std_of(shares[k]) for k in names], capsize=3)
    ax.bar_label(bars, labels=[f"{m:.2f}" for m in means], fontsize=7, padding=2)
    ax.set_yticks(range(len(names)), labels=names)
    ax.invert_yaxis()
    ax.set_xlim(0.0, 1.1)
    ax.set_xlabel("share of test items")
    ax.set_title("which modalities each item needs")
    _save(fig, path)
    return True


def plot_groups(
    groups: list[str],
    series: dict[str, list[Any]],
    ylabel: str,
    title: str,
    path: Path,
    line: tuple[str, Any] | None = None,
) -> None:
    """Grouped bars: one group per entry of ``groups``, one bar per series, error bars = std over seeds;
    ``line``: an optional ``(label, value)`` drawn as a dashed horizontal reference."""
    width = 0.8 / max(1, len(series))
    fig = _new_figure(max(5.0, 0.5 * len(groups) * len(series) + 2.0), 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for i, (label, values) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
        means = [mean_of(v) or 0.0 for v in values]
        ax.bar(xs, means, width, yerr=[std_of(v) for v in values], capsize=2, label=label)
    if line is not None and mean_of(line[1]) is not None:
        ax.axhline(mean_of(line[1]) or 0.0, color="black", linestyle="--", linewidth=1, label=line[0])
    rotate = len(groups) > 4 or max(len(g) for g in groups) > 12
    ax.set_xticks(
        range(len(groups)), labels=groups, rotation=30 if rotate else 0, ha="right" if rotate else "center"
    )
    ax.set_ylim(0.0, 1.1)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncols=min(4, len(series) + (line is not None)))
    _save(fig, path)
