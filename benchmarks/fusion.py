"""Fusion vs unimodal models, mean +- std over seeds, on AV-MNIST (real) and builtin:shapes (synthetic).

AV-MNIST (``examples/avmnist-classify.yaml`` on ``../shared/data/avmnist``): digit classification from
an MNIST image and an FSDD recording; the 500 test pairs come from a speaker never heard in training.
Rows: image only, audio only (the same config with the other modality removed, ``late`` head), every
fusion head trained plainly (no modality dropout, no balance method), and the ``late`` and ``attention``
heads with each balance method (modality dropout 0.3, then every method of ``task.balance`` that is
registered; rows whose method is not registered yet are skipped with a note). Audio clips are floored
at 40 dB and standardised (the example's ``top_db`` / ``normalize``); without that, audio alone
collapsed to one class in 3 of 5 seeds, with or without early stopping. Check: the best fused row
beats the best unimodal row by more than twice the fused row's standard deviation.

builtin:shapes (``examples/shapes-classify.yaml``, 3000 generated scenes, 20% of modalities missing
at random): the label ``mark+tone`` needs two modalities at once (any single one knows at most one of
the two bits). Rows: each modality alone and each head. Check: every fused row beats every unimodal row
by at least 20 points of accuracy.

A unimodal model is scored on the test items that have its modality (all of them on AV-MNIST, about 80%
on shapes); a fused model on every test item, whatever it has. Seeds vary the initialisation, the batch
order and the dropout draws; the data and the splits stay fixed. Each row is trained with the example's
schedule (AV-MNIST: up to 12 epochs, early stopping on validation accuracy; shapes: 10 epochs).

    python benchmarks/fusion.py [--seeds 5] [--quick] [--only avmnist/late,shapes] [--redo] [--threads N]
    python benchmarks/fusion.py --table         # the stored results and checks, running nothing

Results merge into ``benchmarks/results/fusion.json`` seed by seed (``fusion_quick.json`` with
``--quick``): a seed already stored for a row is not run again (``--redo`` runs it again), so an
interrupted run continues where it stopped and rows can be run in several calls; a row's mean and std
cover every seed stored for it, and the checks are recomputed over all stored rows. Each dataset is
prepared (loaded, spectrograms computed) once per set of modalities and shared by all rows and seeds;
the times reported are training + test scoring, preparation is reported apart.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from omnibind.config import apply_overrides, config_from_dict
from omnibind.data.loading import Splits, build_kinds, build_splits
from omnibind.training.balance import BALANCE_METHODS
from omnibind.training.classify import train_classifier

ROOT = Path(__file__).resolve().parents[1]
HEADS = ("late", "attention", "sequential", "experts")
BALANCE = ("dropout", "ogm_ge", "agm", "mmpareto")  # dropout: task.modality_dropout, others: task.balance
BALANCED_HEADS = ("late", "attention")
AVMNIST_MARGIN_SIGMAS = 2.0
SHAPES_MARGIN = 0.20


@dataclass
class Row:
    """One model of the table: a dataset, the modalities it sees, a head and a balance method."""

    name: str
    dataset: str
    modalities: tuple[str, ...] | None  # None: every modality of the example config
    head: str
    balance: str = ""
    overrides: list[str] = field(default_factory=list)

    @property
    def unimodal(self) -> bool:
        return self.modalities is not None and len(self.modalities) == 1


EXAMPLES = {"avmnist": "avmnist-classify.yaml", "shapes": "shapes-classify.yaml"}


def rows() -> list[Row]:
    """Every row of the benchmark, in run order: the plain rows of both datasets, then the balanced ones."""
    out = [Row(f"avmnist/{m}-only", "avmnist", (m,), "late") for m in ("image", "audio")]
    out += [Row(f"avmnist/{h}", "avmnist", None, h) for h in HEADS]
    out += [Row(f"shapes/{m}-only", "shapes", (m,), "late") for m in ("image", "caption", "sound", "table")]
    out += [Row(f"shapes/{h}", "shapes", None, h) for h in HEADS]
    out += [Row(f"avmnist/{h}+{b}", "avmnist", None, h, b) for b in BALANCE for h in BALANCED_HEADS]
    return out


def select(all_rows: list[Row], only: str) -> list[Row]:
    """The rows named in ``only`` (row names, or a dataset name for all its rows); all when empty."""
    if not only:
        return all_rows
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    names = {r.name for r in all_rows} | {r.dataset for r in all_rows}
    unknown = [w for w in wanted if w not in names]
    if unknown:
        raise SystemExit(
            f"--only: unknown row(s) {', '.join(unknown)}; rows: {', '.join(r.name for r in all_rows)}"
        )
    return [r for r in all_rows if r.name in wanted or r.dataset in wanted]


def row_config(row: Row, seed: int, root: str, quick: bool, threads: int = 0) -> Any:
    """The validated run config of ``row`` with ``seed``."""
    raw = yaml.safe_load((ROOT / "examples" / EXAMPLES[row.dataset]).read_text())
    if row.modalities is not None:
        raw["modalities"] = {m: raw["modalities"][m] for m in row.modalities}
    task = raw["task"]
    task["head"] = row.head
    task["modality_dropout"] = 0.3 if row.balance == "dropout" else 0.0
    if row.balance and row.balance != "dropout":
        task["balance"] = row.balance
    overrides = [f"train.seed={seed}", "train.progress=false", f"train.threads={threads}", *row.overrides]
    if row.dataset == "avmnist":
        overrides.append(f"data.root={root}")
    if quick:
        overrides.append("train.epochs=1")
        if row.dataset == "avmnist":
            overrides.append("data.source=builtin:avmnist?text=false&limit=300")
        else:
            overrides.append("data.source=builtin:shapes?n=600&missing=0.2")
    return config_from_dict(apply_overrides(raw, overrides))


class Prepared:
    """Each dataset prepared once per set of modalities and reused by every row and seed that needs it.

    Preparing AV-MNIST (mel spectrograms of 3000 recordings) costs minutes; training a row costs about as
    much, so preparing it again for each of 5 seeds x 14 rows would double the run for nothing.
    """

    def __init__(self) -> None:
        self.cache: dict[tuple[str, ...], tuple[Splits, dict[str, dict[str, Any]], float]] = {}

    def get(self, cfg: Any) -> tuple[Splits, float]:
        """The splits for ``cfg`` (its modalities' fitted statistics copied in) and the preparation time."""
        key = (cfg.data.source, str(cfg.data.root), *cfg.modalities)
        if key not in self.cache:
            if self.cache and next(iter(self.cache))[0] != cfg.data.source:
                self.cache.clear()  # another dataset: free the memory of the previous one
            t0 = time.perf_counter()
            splits = build_splits(cfg, build_kinds(cfg), fit=True, progress=False)
            stats = {m: dict(spec.stats) for m, spec in cfg.modalities.items()}
            self.cache[key] = (splits, stats, time.perf_counter() - t0)
        splits, stats, seconds = self.cache[key]
        for m, spec in cfg.modalities.items():
            spec.stats = dict(stats[m])
        return splits, seconds


def run_seed(
    row: Row, seed: int, root: str, quick: bool, prepared: Prepared, threads: int = 0
) -> dict[str, Any]:
    """Train and test ``row`` with ``seed``: test accuracy, macro-F1, the fused model's subsets, time."""
    cfg = row_config(row, seed, root, quick, threads)
    splits, prep_seconds = prepared.get(cfg)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_classifier(cfg, Path(tmp) / "run", splits=splits)
    assert result.test is not None
    overall = result.test["overall"]
    return {
        "seed": seed,
        "accuracy": overall["accuracy"],
        "macro_f1": overall["macro_f1"],
        "n_test": overall["n"],
        "subsets": {k: v["accuracy"] for k, v in result.test["subsets"].items()},
        "steps": result.steps,
        "stopped_early": result.stopped_early,
        "seconds": time.perf_counter() - t0,
        "prepare_seconds": prep_seconds,
        "threads": torch.get_num_threads(),
    }


def summarise(row: Row, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A row's entry in the JSON: its set-up, mean and std of each score over its seeds, the runs."""
    runs = sorted(runs, key=lambda r: r["seed"])
    return {
        "dataset": row.dataset,
        "modalities": list(row.modalities) if row.modalities else "all",
        "head": row.head,
        "balance": row.balance or "none",
        "unimodal": row.unimodal,
        "seeds": [r["seed"] for r in runs],
        **{k: _spread([r[k] for r in runs]) for k in ("accuracy", "macro_f1", "seconds")},
        "runs": runs,
    }


def _spread(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def checks(stored: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The pass/fail checks of each dataset over the rows stored so far.

    The AV-MNIST rule needs a standard deviation, so a fused row with one seed is not judged (``None``)
    and the verdict is that of the best fused row with two seeds or more.
    """
    out: dict[str, Any] = {}
    for dataset in ("avmnist", "shapes"):
        mine = {k: v for k, v in stored.items() if v["dataset"] == dataset}
        uni = {k: v for k, v in mine.items() if v["unimodal"]}
        fused = {k: v for k, v in mine.items() if not v["unimodal"]}
        if not uni or not fused:
            continue
        best_uni = max(uni, key=lambda k: uni[k]["accuracy"]["mean"])
        top = uni[best_uni]["accuracy"]["mean"]
        per_row = {}
        for name, v in fused.items():
            margin = v["accuracy"]["mean"] - top
            std = v["accuracy"]["std"]
            if dataset == "shapes":
                passed: bool | None = margin >= SHAPES_MARGIN
            else:
                passed = margin > AVMNIST_MARGIN_SIGMAS * std if len(v["seeds"]) > 1 else None
            per_row[name] = {"margin": margin, "std": std, "passed": passed}
        judged = [k for k in fused if per_row[k]["passed"] is not None] or list(fused)
        best_fused = max(judged, key=lambda k: fused[k]["accuracy"]["mean"])
        out[dataset] = {
            "best_unimodal": best_uni,
            "best_unimodal_accuracy": top,
            "best_fused": best_fused,
            "rule": (
                f"margin over the best unimodal row > {AVMNIST_MARGIN_SIGMAS:g} x std of the fused row"
                if dataset == "avmnist"
                else f"margin over every unimodal row >= {SHAPES_MARGIN:g}"
            ),
            "rows": per_row,
            "passed": per_row[best_fused]["passed"]
            if dataset == "avmnist"
            else all(r["passed"] for r in per_row.values()),
        }
    return out


def print_table(stored: dict[str, dict[str, Any]], check: dict[str, Any]) -> None:
    for dataset in ("avmnist", "shapes"):
        mine = [(k, v) for k, v in stored.items() if v["dataset"] == dataset]
        if not mine:
            continue
        c = check.get(dataset, {"rows": {}})
        print(f"\n{dataset}: test accuracy and macro-F1, mean +- std over seeds")
        print(
            f"{'row':30s} {'seeds':>5s} {'accuracy':>15s} {'macro-F1':>15s} {'margin':>7s} {'check':>6s} "
            f"{'s/seed':>6s}"
        )
        for name, v in mine:
            a, f = v["accuracy"], v["macro_f1"]
            r = c["rows"].get(name)
            margin = f"{r['margin']:+7.3f}" if r else f"{'':7s}"
            verdict = "" if r is None else {True: "pass", False: "FAIL", None: "n/a"}[r["passed"]]
            print(
                f"{name:30s} {len(v['seeds']):5d} {a['mean']:7.3f} +- {a['std']:.3f} "
                f"{f['mean']:7.3f} +- {f['std']:.3f} {margin} {verdict:>6s} {v['seconds']['mean']:6.0f}"
            )
        if "best_unimodal" in c:
            print(
                f"best unimodal: {c['best_unimodal']} ({c['best_unimodal_accuracy']:.3f}); "
                f"rule: {c['rule']}; best fused {c['best_fused']}: "
                f"{ {True: 'PASS', False: 'FAIL', None: 'not judged (one seed)'}[c['passed']] }"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds per row (default 5)")
    parser.add_argument(
        "--quick", action="store_true", help="1 seed, 1 epoch, 300 items per AV-MNIST split, 600 scenes"
    )
    parser.add_argument("--only", default="", help="comma-separated row or dataset names")
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "avmnist"))
    parser.add_argument("--redo", action="store_true", help="run stored seeds of the chosen rows again")
    parser.add_argument("--table", action="store_true", help="print the stored results, run nothing")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch threads per run (train.threads; 0: torch's default)"
    )
    args = parser.parse_args()
    if args.seeds < 1:
        raise SystemExit(f"--seeds must be at least 1, got {args.seeds}")
    from _common import RESULTS, save

    chosen = [] if args.table else select(rows(), args.only)
    if any(r.dataset == "avmnist" for r in chosen) and not Path(args.root).exists():
        raise SystemExit(f"AV-MNIST data not found at {args.root}; pass --root PATH")
    seeds = [0] if args.quick else list(range(args.seeds))
    path = RESULTS / ("fusion_quick.json" if args.quick else "fusion.json")
    registered = set(BALANCE_METHODS.names())
    prepared = Prepared()
    for row in chosen:
        if row.balance not in ("", "dropout") and row.balance not in registered:
            print(f"skipped {row.name}: balance method '{row.balance}' is not registered yet", flush=True)
            continue
        done = {} if args.redo else {r["seed"]: r for r in _stored(path).get(row.name, {}).get("runs", [])}
        todo = [s for s in seeds if s not in done]
        print(f"{row.name}: {len(todo)} seed(s) to run, {len(seeds) - len(todo)} stored", flush=True)
        for seed in todo:
            run = run_seed(row, seed, args.root, args.quick, prepared, args.threads)
            print(
                f"  seed {seed}: accuracy {run['accuracy']:.3f}, macro-F1 {run['macro_f1']:.3f}, "
                f"{run['steps']} steps, {run['seconds']:.0f} s (+ {run['prepare_seconds']:.0f} s preparing, "
                "once per dataset and modalities)",
                flush=True,
            )
            done[seed] = run
            # Re-read before every write and merge by seed, so that what other calls (--only, running at
            # the same time) stored is kept: other rows, and other seeds of this row.
            stored = _stored(path)
            runs = {r["seed"]: r for r in stored.get(row.name, {}).get("runs", [])} | done
            stored[row.name] = summarise(row, list(runs.values()))  # every stored seed of the row
            order = {r.name: i for i, r in enumerate(rows())}
            stored = dict(sorted(stored.items(), key=lambda kv: order.get(kv[0], len(order))))
            save(path.stem, {"quick": args.quick, "rows": stored, "checks": checks(stored)})
    stored = _stored(path)
    if not stored:
        raise SystemExit("no row was run")
    print_table(stored, checks(stored))
    print(f"\nresults in {path}")


def _stored(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())["rows"] if path.exists() else {}


if __name__ == "__main__":
    main()
