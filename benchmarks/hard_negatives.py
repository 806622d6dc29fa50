"""Mined hard negatives on real data: emoji name -> image retrieval with and without them, and their cost.

Data: ``../shared/data/emoji_text`` (Twemoji images and CLDR names, real). Both arms are
``examples/emoji.yaml`` with the small conv image encoder trained from scratch (``conv2d``; MiniLM frozen +
a trained projection on the text side), trained as a user runs it, ``omnibind train --seeds N`` then
``omnibind eval`` of each seed on the 190 test emoji, the query being the name alone and the one
relevant target its image:

- ``plain``: InfoNCE with the batch's own negatives;
- ``mined``: the same with ``objective.hard_negatives: {mine_every: E, k: K}``: from epoch E on, every E
  epochs, the current model embeds the 1,526 training emoji and each gets the K items nearest to it
  (text -> image and image -> text in turn), which join the candidates of its batches.

Reported: text->image R@1 and R@10, mean ± std over the seeds; the mining seconds per round (embedding the
training split + the exact search, from each run's ``metrics.jsonl``) and their share of the training
command's wall time; the training wall time of each arm (which also pays for encoding the negatives in
every step).

    python benchmarks/hard_negatives.py [--seeds 3] [--epochs 20] [--mine-every 2] [--k 2] [--quick]
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


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "omnibind", *args], check=True, stdout=subprocess.DEVNULL)


def _mean_std(values: list[float]) -> dict[str, object]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.mean(values), "std": std, "values": values}


def arm(name: str, extra: list[str], work: Path, args: argparse.Namespace) -> dict[str, object]:
    """Train and evaluate one arm; returns its retrieval figures and costs."""
    sets = [
        f"data.root={args.root}",
        f"data.cache={work / 'cache'}",
        "modalities.image.encoder.name=conv2d",
        f"train.epochs={args.epochs}",
        "train.progress=false",
        *extra,
    ]
    if args.quick:
        sets.append("data.source=builtin:emoji?limit=200&text=label%2Btags")
    run = work / "run"
    t0 = time.perf_counter()
    _cli("train", str(ROOT / "examples" / "emoji.yaml"), "--out", str(run), "--seeds", str(args.seeds),
         "--no-eval", *[x for s in sets for x in ("--set", s)])  # fmt: skip
    wall = time.perf_counter() - t0
    names = "builtin:emoji?text=label" + ("&limit=200" if args.quick else "")
    retrieval, rounds = [], []
    for k in range(args.seeds):
        seed = run / f"seed-{k}"
        out = work / f"eval-{k}.json"
        _cli("eval", str(seed), "--data", names, "--split", "test", "--out", str(out))
        retrieval.append(json.loads(out.read_text())["retrieval"]["text->image"])
        lines = [json.loads(x) for x in (seed / "metrics.jsonl").read_text().splitlines()]
        rounds += [x for x in lines if "mining/seconds" in x]
    mining = sum(r["mining/seconds"] for r in rounds)
    result = {
        "overrides": extra,
        "n": retrieval[0]["n"],
        "r@1": _mean_std([float(m["r@1"]) for m in retrieval]),
        "r@10": _mean_std([float(m["r@10"]) for m in retrieval]),
        "train_seconds": wall,
        "mining_rounds": len(rounds),
        "mining_seconds_per_round": _mean_std([r["mining/seconds"] for r in rounds]) if rounds else None,
        "mining_embed_seconds": sum(r["mining/embed_seconds"] for r in rounds),
        "mining_search_seconds": sum(r["mining/search_seconds"] for r in rounds),
        "mining_share_of_train": mining / wall,
        "negatives_per_item": statistics.mean(r["mining/negatives_per_item"] for r in rounds)
        if rounds
        else 0,
        "per_seed": retrieval,
    }
    print(f"{name}: done in {wall:.0f} s", file=sys.stderr, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--mine-every", type=int, default=2)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "emoji_text"))
    parser.add_argument("--quick", action="store_true", help="200 emoji per split, 2 seeds, 3 epochs")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.epochs, args.mine_every = 2, 3, 1
    if not Path(args.root).exists():
        raise SystemExit(f"emoji data not found at {args.root}; pass --root PATH")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import save

    hard = f"objective.hard_negatives={{mine_every: {args.mine_every}, k: {args.k}}}"
    arms = {"plain": [], f"mined (every {args.mine_every} epochs, k {args.k})": [hard]}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, extra) in enumerate(arms.items()):
            results[name] = arm(name, extra, Path(tmp) / f"arm-{i}", args)
    print(f"emoji test split, names -> images, {args.seeds} seeds, {args.epochs} epochs, conv2d + MiniLM")
    print("| negatives | n | text→image R@1 | R@10 | train s | rounds | mining s / round | mining share |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        r1, r10, per = r["r@1"], r["r@10"], r["mining_seconds_per_round"]
        cost = f"{per['mean']:.2f} ± {per['std']:.2f}" if per else "-"
        share = 100 * r["mining_share_of_train"]
        recall = f"{r1['mean']:.3f} ± {r1['std']:.3f} | {r10['mean']:.3f} ± {r10['std']:.3f}"
        rounds = r["mining_rounds"]
        print(
            f"| {name} | {r['n']} | {recall} | {r['train_seconds']:.0f} | {rounds} | {cost} | {share:.1f}% |"
        )
    payload = {"arms": results, "seeds": args.seeds, "epochs": args.epochs, "mine_every": args.mine_every}
    name = "hard_negatives_quick" if args.quick else "hard_negatives"
    print(f"written {save(name, {**payload, 'k': args.k})}")


if __name__ == "__main__":
    main()
