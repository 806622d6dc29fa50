"""1-to-K: several texts per image, trained with one text, ``sample`` or ``all``, through the CLI.

Data: the emoji set (``../shared/data/emoji_text``, real Twemoji images and CLDR texts), each image with two
texts (``builtin:emoji?text=views``: its name and its keyword list), and ``builtin:shapes?captions=3``
(synthetic scenes, three independently worded captions each). Three set-ups, each ``omnibind train``
with ``--seeds 3`` and then ``omnibind eval --data ...`` on the test split *with every text*:

- ``one``: one text per image (the emoji name alone; the first shapes wording), declared ``multi: true``;
- ``sample``: every text, one per image and step (``objective.multi_positive: sample``);
- ``all``: every text a positive of its image (``multi_positive: all``, multi-positive InfoNCE).

Reported: text->image R@1 (every text a query) and MRV (Mean Rank Variance across an image's texts;
lower is more consistent), mean ± std over the seeds. Encoders are small and trained from scratch (conv
image, bag-of-tokens text), so the numbers compare the set-ups, not the state of the art.

    python benchmarks/multi_positive.py [--quick] [--epochs 15] [--root ../shared/data/emoji_text]
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

import yaml

ROOT = Path(__file__).resolve().parents[1]
MODES = ("one", "sample", "all")


def _config(source: str, text: str, mode: str, epochs: int) -> dict:
    return {
        "modalities": {
            "image": {"kind": "image", "size": 32, "encoder": {"name": "conv2d", "width": 16}},
            text: {
                "kind": "text",
                "multi": True,
                "encoder": {"name": "bag_of_tokens", "width": 64, "buckets": 4096},
            },
        },
        "data": {"source": source},
        "model": {"dim": 64},
        "objective": {"name": "infonce", "multi_positive": "sample" if mode == "one" else mode},
        "train": {"epochs": epochs, "batch_size": 64, "lr": 0.003, "warmup_steps": 20, "progress": False},
    }


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bench(name: str, train_src: dict[str, str], eval_src: str, text: str, epochs: int, seeds: int) -> dict:
    out: dict = {}
    exe = [sys.executable, "-m", "omnibind"]
    for mode in MODES:
        with tempfile.TemporaryDirectory() as tmp:
            cfg_path = Path(tmp) / "run.yaml"
            cfg_path.write_text(yaml.safe_dump(_config(train_src[mode], text, mode, epochs)))
            t0 = time.perf_counter()
            _run([*exe, "train", str(cfg_path), "--out", f"{tmp}/run", "--seeds", str(seeds), "--no-eval"])
            seconds = time.perf_counter() - t0
            r1, mrv = [], []
            for k in range(seeds):
                metrics = Path(tmp) / f"m{k}.json"
                run = f"{tmp}/run/seed-{k}"
                _run([*exe, "eval", run, "--data", eval_src, "--split", "test", "--out", str(metrics)])
                pair = json.loads(metrics.read_text())["retrieval"][f"{text}->image"]
                r1.append(pair["r@1"])
                mrv.append(pair.get("mrv", float("nan")))
        out[mode] = {"r@1": r1, "mrv": mrv, "train_seconds": seconds}
        print(f"{name:6} {mode:6} R@1 {_ms(r1)}  MRV {_ms(mrv)}  ({seconds:.0f} s)", flush=True)
    return out


def _ms(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.3f} ± {sd:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="2 epochs, 1 seed, shapes only")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "emoji_text"))
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from _common import save

    epochs, seeds = (2, 1) if args.quick else (args.epochs, args.seeds)
    results = {}
    shapes = "builtin:shapes?n=2000&image_size=32&captions=3"
    one_shape = "builtin:shapes?n=2000&image_size=32"
    name = "multi_positive_quick" if args.quick else "multi_positive"
    results["shapes"] = bench(
        "shapes", {"one": one_shape, "sample": shapes, "all": shapes}, shapes, "caption", epochs, seeds
    )
    save(name, {"epochs": epochs, "seeds": seeds, **results})  # kept if the emoji part is stopped
    if not args.quick:
        views = f"builtin:emoji?text=views&root={args.root}"
        one = f"builtin:emoji?text=label&root={args.root}"
        sources = {"one": one, "sample": views, "all": views}
        results["emoji"] = bench("emoji", sources, views, "text", epochs, seeds)
        save(name, {"epochs": epochs, "seeds": seeds, **results})


if __name__ == "__main__":
    main()
