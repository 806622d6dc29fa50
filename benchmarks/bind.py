"""Binding a new modality through ``omnibind train``, as a user runs it: emergent pairs vs joint training.

On ``builtin:shapes`` (items with holes, as in the demo), for each seed:

1. **base**: train image + caption + sound (InfoNCE, all pairs);
2. **bound**: ``model.init: base`` with ``table`` added, on binding data where every training item has only
   its image and its table (caption and sound removed from the train and val splits): only the table tower
   trains;
3. **joint**: image + caption + sound + table trained together from scratch.

Reported on the test split (which keeps every modality): table->caption and table->sound R@1 (pairs the
bound model never saw together), table->image (the binding pair), and an old pair (image->caption) that
binding must leave unchanged. Mean ± std over seeds.

    python benchmarks/bind.py                 # 3 seeds, 3,000 items, 30 epochs
    python benchmarks/bind.py --quick         # 2 seeds, 1,000 items, 8 epochs
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODALITIES = {
    "image": {"kind": "image", "size": 32, "encoder": {"name": "conv2d", "width": 48}},
    "caption": {"kind": "text"},
    "sound": {"kind": "audio", "sample_rate": 8000, "seconds": 0.5, "n_mels": 32, "n_fft": 256},
    "table": {"kind": "tabular", "columns": ["width", "height", "x", "y"]},
}
PAIRS = ["table->caption", "table->sound", "table->image", "image->caption"]


def _config(names: list[str], n: int, epochs: int, seed: int, **extra: object) -> dict:
    return {
        "modalities": {m: MODALITIES[m] for m in names},
        "data": {"source": f"builtin:shapes?n={n}&missing=0.2", **extra.pop("data", {})},
        "model": {"dim": 64, **extra.pop("model", {})},
        "objective": {"name": "infonce", "pairs": "all"},
        "train": {
            "epochs": epochs,
            "batch_size": 128,
            "lr": 0.002,
            "warmup_steps": 30,
            "seed": seed,
            "progress": False,
        },
    }


def _train(cfg: dict, out: Path) -> dict:
    path = out.with_suffix(".yaml")
    path.write_text(json.dumps(cfg))
    done = subprocess.run(
        [sys.executable, "-m", "omnibind", "train", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"omnibind train failed:\n{done.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())["retrieval"]
    return {pair: metrics[pair]["r@1"] for pair in PAIRS if pair in metrics}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None)
    args = parser.parse_args()
    n, epochs, seeds = (1000, 8, 2) if args.quick else (3000, 30, 3)
    seeds = args.seeds or seeds
    work = Path(tempfile.mkdtemp(prefix="omnibind-bind-"))
    results: dict[str, list[dict]] = {"base": [], "bound": [], "joint": []}
    for seed in range(seeds):
        base = work / f"base-{seed}"
        results["base"].append(_train(_config(["image", "caption", "sound"], n, epochs, seed), base))
        binding = {"missing": [{"modality": "caption", "rate": 1.0}, {"modality": "sound", "rate": 1.0}]}
        cfg = _config(list(MODALITIES), n, epochs, seed, data=binding, model={"init": str(base)})
        results["bound"].append(_train(cfg, work / f"bound-{seed}"))
        results["joint"].append(_train(_config(list(MODALITIES), n, epochs, seed), work / f"joint-{seed}"))
        print(f"seed {seed}: " + "; ".join(f"{k} {v}" for k, v in results.items() if v), flush=True)

    def cell(model: str, pair: str) -> str:
        values = [r[pair] for r in results[model] if pair in r]
        if not values:
            return "-"
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {spread:.3f}"

    print(f"\nR@1 on the test split, builtin:shapes n={n}, {epochs} epochs, {seeds} seeds (mean ± std):")
    print(" | ".join(["model", *PAIRS]))
    for model in results:
        print(" | ".join([model, *(cell(model, p) for p in PAIRS)]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import save

    print(f"written {save('bind', {'n': n, 'epochs': epochs, 'seeds': seeds, 'results': results})}")


if __name__ == "__main__":
    main()
