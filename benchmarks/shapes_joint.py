"""The demo's XOR bits over seeds: unit-length Symile against the Symile joint head on its frozen encoders.

``builtin:shapes`` gives each item three bits (``mark`` in the image, ``tone`` in the caption,
``timbre`` in the sound, timbre = mark XOR tone): only the other two modalities *together* tell a bit.
For each seed this trains the demo's two Symile stages exactly as ``omnibind demo`` does (presets
``shapes-symile``, then ``shapes-symile-joint`` with ``model.init`` on the first), evaluates both on the
test split, and prints per bit the share of composed queries whose top-1 target has the right bit
(``omnibind.evaluation.evaluate.joint_fact_metrics``; chance is the most common value's share, about
0.5). Pairwise CLIP is at chance by construction (see the demo's report for its row).

    python benchmarks/shapes_joint.py [--seeds 3] [--threads 2] [--quick]

``--quick``: 1,200 items and 3 epochs per stage (a smoke test; its numbers mean nothing). Writes
``benchmarks/results/shapes_joint.json`` (``shapes_joint_quick.json``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

STAGES = (("symile", "shapes-symile"), ("joint", "shapes-symile-joint"))


def run_seed(seed: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Train both stages for one seed; joint-fact accuracy and seconds of each."""
    from omnibind.data.loading import build_kinds, build_splits
    from omnibind.evaluation.evaluate import embed_dataset, joint_fact_metrics
    from omnibind.training.demo import QUICK, preset
    from omnibind.training.trainer import train

    out: dict[str, Any] = {"seed": seed}
    base = [f"train.seed={seed}", f"train.threads={args.threads}", "train.progress=false"]
    base += QUICK if args.quick else []
    for stage, name in STAGES:
        extra = [f"model.init={tmp / 'symile'}"] if stage == "joint" else []
        t0 = time.perf_counter()
        model = train(preset(name, base + extra), tmp / stage).model
        seconds = time.perf_counter() - t0
        splits = build_splits(model.config, build_kinds(model.config), ("test",), fit=False, progress=False)
        test = splits.datasets["test"]
        facts = joint_fact_metrics(*embed_dataset(model, test), test, model.joint_similarity)
        out[stage] = {
            "seconds": seconds,
            "facts": {
                k: {"accuracy": v["accuracy"], "chance": v["chance"], "n": v["n"]} for k, v in facts.items()
            },
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(run_seed(seed, args, Path(tmp)))
        r = runs[-1]
        cells = ", ".join(
            f"{k.split(':')[0]} {r['symile']['facts'][k]['accuracy']:.3f} -> {v['accuracy']:.3f}"
            for k, v in r["joint"]["facts"].items()
        )
        print(
            f"seed {seed}: {cells} ({r['symile']['seconds']:.0f} s + {r['joint']['seconds']:.0f} s)",
            flush=True,
        )

    print(
        f"\nJoint facts on the shapes test split, {args.seeds} seed(s), mean +- std "
        "(top-1 target has the right bit)"
    )
    print(
        f"{'fact: query -> target':36s} {'Symile (unit length)':>22s} {'Symile joint head':>20s} "
        f"{'chance':>8s}"
    )
    summary: dict[str, Any] = {}
    for key in runs[0]["joint"]["facts"]:
        cols = {}
        for stage in ("symile", "joint"):
            values = [r[stage]["facts"][key]["accuracy"] for r in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cols[stage] = {"mean": statistics.fmean(values), "std": std, "values": values}
        chance = statistics.fmean(r["joint"]["facts"][key]["chance"] for r in runs)
        summary[key] = {**cols, "chance": chance}
        print(
            f"{key:36s} {cols['symile']['mean']:>13.3f} +- {cols['symile']['std']:.3f} "
            f"{cols['joint']['mean']:>11.3f} +- {cols['joint']['std']:.3f} {chance:>8.3f}"
        )
    seconds = {s: statistics.fmean(r[s]["seconds"] for r in runs) for s, _ in STAGES}
    print(f"mean training time: Symile {seconds['symile']:.0f} s, joint head {seconds['joint']:.0f} s")
    name = "shapes_joint" + ("_quick" if args.quick else "")
    path = save(name, {"seeds": args.seeds, "quick": args.quick, "summary": summary, "runs": runs})
    print(f"written {path}")


if __name__ == "__main__":
    main()
