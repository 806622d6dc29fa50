"""AV-MNIST: image + audio + the digit's name as text (pretrained MiniLM, frozen), on real data.

Data: ``../shared/data/avmnist`` (MNIST digits paired with FSDD recordings of the same digit; the test
speaker is never heard in training, the test images come from the MNIST test set). Trains
``examples/avmnist.yaml`` with several seeds and reports, on the held-out speaker, audio->image and
image->audio R@1 with label relevance (any item of the same digit counts) and zero-shot digit accuracy
of each modality from the text prompt "the digit {digit}". Chance is about 0.1 for all of them.

    python benchmarks/avmnist.py [--quick] [--seeds 3] [--root ../shared/data/avmnist]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from omnibind.config import load_config
from omnibind.data.loading import build_kinds, build_splits
from omnibind.evaluation.evaluate import evaluate
from omnibind.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
KEYS = [
    ("retrieval", "audio->image", "r@1"),
    ("retrieval", "image->audio", "r@1"),
    ("retrieval", "image->text", "r@1"),
    ("zero_shot", "digit/image", "accuracy"),
    ("zero_shot", "digit/audio", "accuracy"),
]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 epochs")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "avmnist"))
    args = parser.parse_args()
    if not Path(args.root).exists():
        raise SystemExit(f"AV-MNIST data not found at {args.root}; pass --root PATH")
    from _common import save

    seeds = [0] if args.quick else list(range(args.seeds))
    results: dict[str, list[float]] = {f"{k[1]} {k[2]}": [] for k in KEYS}
    times = []
    for seed in seeds:
        overrides = [f"data.root={args.root}", f"train.seed={seed}", "train.progress=false"]
        if args.quick:
            overrides.append("train.epochs=3")
        cfg = load_config(ROOT / "examples" / "avmnist.yaml", overrides)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            model = train(cfg, Path(tmp) / "run").model
            splits = build_splits(
                model.config, build_kinds(model.config), ("train", "test"), fit=False, progress=False
            )
            metrics = evaluate(model, splits.datasets["test"], reference=splits.datasets["train"])
        times.append(time.perf_counter() - t0)
        for section, key, field in KEYS:
            results[f"{key} {field}"].append(metrics[section][key][field])
        print(f"seed {seed}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in results.items()), flush=True)
    print(
        f"\nAV-MNIST test (speaker yweweler, 500 pairs), {len(seeds)} seed(s), "
        f"{statistics.fmean(times):.0f} s per run (train + eval)"
    )
    print(f"{'metric':28s} {'mean':>7s} {'std':>7s}  per seed")
    summary = {}
    for name, values in results.items():
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        summary[name] = {"mean": statistics.fmean(values), "std": std, "values": values}
        print(
            f"{name:28s} {statistics.fmean(values):7.3f} {std:7.3f}  " + " ".join(f"{v:.3f}" for v in values)
        )
    print(f"written {save('avmnist', {'results': summary, 'seeds': seeds, 'quick': args.quick})}")


if __name__ == "__main__":
    main()
