"""The Symile paper's XOR result, reproduced: pick b among all 2^d_v candidates given a and c.

Data: ``builtin:xor`` (synthetic, the paper's process): a, b are d_v = 5 fair bits; with probability p,
c = a XOR b, otherwise c = a. Linear encoders, D = 16, 10k train / 5k test (``examples/xor-*.yaml``).
At p = 1 no pair of modalities shares information, so pairwise CLIP stays at chance (1/32 = 0.031) and
Symile can reach 1.0; at p = 0.5 the Bayes optimum is p + (1 - p) / 2^d_v = 0.516.

    python benchmarks/symile_xor.py            # 3 seeds, p in {1.0, 0.5}, Symile and CLIP
    python benchmarks/symile_xor.py --quick    # 1 seed, fewer epochs
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from omnibind.config import load_config
from omnibind.data.loading import build_kinds, build_splits
from omnibind.data.synthetic import xor_bayes_accuracy
from omnibind.evaluation.evaluate import evaluate
from omnibind.model import OmniModel
from omnibind.training.trainer import train

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def pick_b_and_r1(model: OmniModel) -> tuple[float, float]:
    """Accuracy of choosing each test item's b among all 2^d_v bit vectors, scored from (a, c), and R@1 of
    the composed query a+c->b over the test items: ``metrics.json``'s ``xor_pick`` and ``retrieval``
    entries, computed by the same function as ``omnibind eval``."""
    splits = build_splits(model.config, build_kinds(model.config), ("test",), fit=False, progress=False)
    metrics = evaluate(model, splits.datasets["test"])
    return metrics["xor_pick"]["a+c->b"]["accuracy"], metrics["retrieval"]["a+c->b"]["r@1"]


def run(objective: str, p: float, seed: int, epochs: int | None) -> tuple[float, float]:
    overrides = [
        f"data.source=builtin:xor?p={p}&d_v=5&n_train=10000&n_val=1000&n_test=5000&seed={seed}",
        f"train.seed={seed}",
        "train.progress=false",
        "train.threads=1",
    ]
    if epochs:
        overrides.append(f"train.epochs={epochs}")
    cfg = load_config(EXAMPLES / f"xor-{objective}.yaml", overrides)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(cfg, Path(tmp) / "run")
        return pick_b_and_r1(result.model)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 20 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    seeds = [0] if args.quick else list(range(args.seeds))
    epochs = 20 if args.quick else None
    from _common import save

    rows = []
    print(
        f"{'objective':10s} {'p':>4s} {'accuracy (mean ± std)':>24s}  per seed"
        "        chance  Bayes   a+c->b R@1  time/run"
    )
    for p in (1.0, 0.5):
        for objective in ("symile", "clip"):
            t0 = time.perf_counter()
            results = [run(objective, p, s, epochs) for s in seeds]
            accs = [acc for acc, _ in results]
            r1 = statistics.fmean(r for _, r in results)
            dt = (time.perf_counter() - t0) / len(seeds)
            mean = statistics.fmean(accs)
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            bayes = xor_bayes_accuracy(5, p)
            rows.append(
                {
                    "objective": objective,
                    "p": p,
                    "accuracies": accs,
                    "retrieval_r1": [r for _, r in results],
                    "mean": mean,
                    "std": std,
                    "bayes": bayes,
                    "chance": 1 / 32,
                    "seconds_per_run": dt,
                }
            )
            per = " ".join(f"{a:.3f}" for a in accs)
            print(
                f"{objective:10s} {p:4.1f} {mean:16.3f} ± {std:.3f}  {per:14s}  {1 / 32:.3f}"
                f"  {bayes:.3f}  {r1:10.3f}  {dt:6.1f}s"
            )
    path = save("symile_xor", {"rows": rows, "quick": args.quick})
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
