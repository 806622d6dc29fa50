"""The demo: a pairwise (CLIP) model over four modalities and a Symile model beside it, on built-in data.

The main model (``DIR/model``) aligns image, caption, sound and table of the shapes data, with holes:
pairwise facts (shape, colour, size, position) are what it learns. The XOR bits (``mark``, ``tone``,
``timbre``) are carried only by the combination of image, caption and sound, so no pairwise objective
can learn them. A Symile model over those three modalities (``DIR/symile``, unit-length embeddings)
learns the scene facts; a second, short Symile training on its frozen encoders (``DIR/symile-joint``:
standardised, unnormalised projections, see docs/concepts.md) learns the bits. The report puts the
models' composed-query results and joint-fact accuracies side by side.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Any

from omnibind.config import RunConfig, apply_overrides, config_from_dict
from omnibind.errors import OmnibindError

QUICK = ["data.source=builtin:shapes?n=1200&missing=0.2", "train.epochs=3"]


def preset(name: str, overrides: list[str] | None = None) -> RunConfig:
    """A config shipped with the package (``shapes-clip``, ``shapes-symile``, ``shapes-symile-joint``),
    with overrides."""
    import yaml

    text = resources.files("omnibind.presets").joinpath(f"{name}.yaml").read_text()
    return config_from_dict(apply_overrides(yaml.safe_load(text), overrides or []))


def side_by_side(
    clip: dict[str, Any], symile: dict[str, Any], joint: dict[str, Any] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Composed-query R@1 and joint-fact accuracy of the models, for the keys they share.

    ``joint`` (the Symile joint head's metrics) adds ``symile_joint`` fields where given.
    """
    others = [symile] + ([joint] if joint is not None else [])
    queries = [
        {
            "query": key,
            "clip_r@1": value["r@1"],
            "symile_r@1": symile["retrieval"][key]["r@1"],
            **({"symile_joint_r@1": joint["retrieval"][key]["r@1"]} if joint is not None else {}),
            "n": value["n"],
        }
        for key, value in clip["retrieval"].items()
        if "+" in key and all(key in m["retrieval"] for m in others)
    ]
    facts = [
        {
            "fact": key,
            "clip": value["accuracy"],
            "symile": symile["joint_facts"][key]["accuracy"],
            **({"symile_joint": joint["joint_facts"][key]["accuracy"]} if joint is not None else {}),
            "chance": value["chance"],
            "n": value["n"],
        }
        for key, value in clip.get("joint_facts", {}).items()
        if all(key in m.get("joint_facts", {}) for m in others)
    ]
    return {"composed_r@1": queries, "joint_facts": facts}


JOINT_FACTS_PNG = "joint_facts.png"


def plot_joint_facts(compare: dict[str, list[dict[str, Any]]], path: Path) -> bool:
    """Grouped bars: each joint fact's accuracy for CLIP, Symile and the joint head, chance as a tick."""
    from omnibind.evaluation.report import _new_figure, _save

    rows = compare.get("joint_facts") or []
    if not rows:
        return False
    models = [("clip", "CLIP"), ("symile", "Symile (unit length)"), ("symile_joint", "Symile joint head")]
    models = [(key, label) for key, label in models if all(key in r for r in rows)]
    fig = _new_figure(1.9 * len(rows) + 2.5, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(models)
    for i, (key, label) in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(rows))]
        bars = ax.bar(xs, [r[key] for r in rows], width, label=label)
        ax.bar_label(bars, labels=[f"{r[key]:.2f}" for r in rows], fontsize=7)
    for j, r in enumerate(rows):
        ax.hlines(r["chance"], j - 0.45, j + 0.45, colors="black", linestyles="dashed", linewidth=1)
    ax.set_xticks(range(len(rows)), labels=[r["fact"].replace(": ", "\n") for r in rows], fontsize=8)
    ax.set_ylim(0.0, 1.1)
    ax.set_ylabel("top-1 target has the right bit")
    ax.set_title("XOR bits through composed queries (dashed: chance)")
    ax.legend(fontsize=7, loc="upper left")
    _save(fig, path)
    return True


def _sections(compare: dict[str, list[dict[str, Any]]], timings: dict[str, float]) -> list[tuple[str, str]]:
    facts = [
        "| joint fact: query -> target | CLIP | Symile | Symile joint head | chance | n |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    facts += [
        f"| {r['fact']} | {r['clip']:.3f} | {r['symile']:.3f} | {r['symile_joint']:.3f} | "
        f"{r['chance']:.3f} | {r['n']} |"
        for r in compare["joint_facts"]
    ]
    queries = [
        "| composed query | CLIP R@1 | Symile R@1 | Symile joint head R@1 | n |",
        "| --- | --- | --- | --- | --- |",
    ]
    queries += [
        f"| {r['query']} | {r['clip_r@1']:.3f} | {r['symile_r@1']:.3f} | {r['symile_joint_r@1']:.3f} | "
        f"{r['n']} |"
        for r in compare["composed_r@1"]
    ]
    return [
        (
            "The fact no pair carries: Symile vs pairwise CLIP",
            "Each shapes item has three bits: `mark` (image), `tone` (caption) and `timbre` (sound), with "
            "timbre = mark XOR tone, so any one bit is readable only from the other two together. A composed "
            "query of two of these modalities must find a target with the right bit. CLIP sums pairwise "
            "cosines and cannot see it (chance); Symile scores the triple with the multilinear inner "
            "product. With unit-length embeddings (`DIR/symile`) the strong scene facts take the whole "
            "length and the weak bits stay near chance; the joint head (`DIR/symile-joint`: the same "
            "encoders, frozen, with standardised and unnormalised projections trained by Symile) "
            "retrieves them. Share of top-1 targets with the right bit:\n\n"
            + "\n".join(facts)
            + f"\n\n![joint facts]({JOINT_FACTS_PNG})",
        ),
        ("Composed queries, all three models (relevance: same facts)", "\n".join(queries)),
        (
            "Reading the tables",
            "A target counts as relevant when it shares the facts that both sides carry: image and caption "
            "share shape, colour, size and position; sound shares shape and colour; the table shares size "
            "and position. Sound and table share no fact, so their pairs fall back to same-item relevance "
            "and sit near chance by construction; pairs whose shared facts have few values (table: 2 sizes "
            "x 2 positions) are easy by construction.",
        ),
        ("Timing", "\n".join(f"- {k}: {v:.3f}" for k, v in timings.items())),
    ]


def run_demo(out: str | Path, quick: bool = False, overrides: list[str] | None = None) -> dict[str, Any]:
    """Train, evaluate and report; returns the paths written and the metrics."""
    from omnibind.data.loading import build_kinds, build_splits
    from omnibind.evaluation.evaluate import evaluate
    from omnibind.evaluation.report import write_report
    from omnibind.io import write_json_atomic
    from omnibind.training.trainer import train

    out = Path(out)
    if (out / "model").exists() or (out / "metrics.json").exists():
        raise OmnibindError(
            f"{out} already holds a demo; pass another --out or remove it (nothing was overwritten)"
        )
    extra = (QUICK if quick else []) + list(overrides or [])
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    runs = (
        ("clip", out, "shapes-clip", []),
        ("symile", out / "symile", "shapes-symile", []),
        ("symile_joint", out / "symile-joint", "shapes-symile-joint", [f"model.init={out / 'symile'}"]),
    )
    for name, run_dir, preset_name, init in runs:
        cfg = preset(preset_name, extra + init)
        print(f"\n== training the {name.replace('_', ' ')} model ({cfg.objective.name}) ==")
        t0 = time.perf_counter()
        result = train(cfg, run_dir)
        timings[f"train_{name}_s"] = time.perf_counter() - t0
        timings[f"{name}_data_wait_fraction"] = result.timing["data_wait_fraction"]
        timings[f"{name}_items_per_s"] = result.timing["items_per_s"]
        splits = build_splits(
            result.model.config,
            build_kinds(result.model.config),
            ("train", "test"),
            fit=False,
            progress=False,
        )
        metrics = evaluate(result.model, splits.datasets["test"], reference=splits.datasets["train"])
        results[name] = {"metrics": metrics, "history": result.history}
    metrics = dict(results["clip"]["metrics"])
    compare = side_by_side(
        results["clip"]["metrics"], results["symile"]["metrics"], results["symile_joint"]["metrics"]
    )
    metrics["symile"] = {**results["symile"]["metrics"], "side_by_side": compare}
    metrics["symile_joint"] = results["symile_joint"]["metrics"]
    timings["total_s"] = time.perf_counter() - started
    metrics["timing"] = timings
    write_json_atomic(out / "metrics.json", metrics)
    plot_joint_facts(compare, out / JOINT_FACTS_PNG)
    report = write_report(
        out,
        metrics,
        history=results["clip"]["history"],
        title="omnibind demo: four modalities of built-in data",
        extra_sections=_sections(compare, timings),
    )
    return {"report": report, "metrics": out / "metrics.json", "model": out / "model", "all": metrics}
