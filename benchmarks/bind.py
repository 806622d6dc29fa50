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

On AV-MNIST (``../shared/data/avmnist``, real MNIST digits paired with FSDD recordings; the settings of
``examples/avmnist.yaml``), for each seed:

1. **base**: image + text (the digit's name through MiniLM, frozen);
2. **bound**: ``model.init: base`` with ``audio`` added, on binding data where every training item has only
   its image and its audio (text removed from train and val): only the audio tower trains;
3. **joint**: image + audio + text trained together.

Reported on the held-out speaker: zero-shot digit accuracy of audio from the text prompt "the digit
{digit}" (audio and text never met in binding: the emergent pair), of images, and audio->image R@1
(label relevance).

    python benchmarks/bind.py                 # both: 3 seeds; shapes 3,000 items, 30 epochs
    python benchmarks/bind.py --quick         # 2 seeds, shapes 1,000 items, 8 epochs; AV-MNIST 5 epochs
    python benchmarks/bind.py --part avmnist  # one half only (shapes | avmnist)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
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


def _run(cfg: dict, out: Path) -> dict:
    """``omnibind train`` on ``cfg`` as a user runs it; the run's ``metrics.json``."""
    path = out.with_suffix(".yaml")
    path.write_text(json.dumps(cfg))
    done = subprocess.run(
        [sys.executable, "-m", "omnibind", "train", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"omnibind train failed:\n{done.stderr[-2000:]}")
    return json.loads((out / "metrics.json").read_text())


def _train(cfg: dict, out: Path) -> dict:
    metrics = _run(cfg, out)["retrieval"]
    return {pair: metrics[pair]["r@1"] for pair in PAIRS if pair in metrics}


AV_KEYS = {
    "audio zero-shot": ("zero_shot", "digit/audio", "accuracy"),
    "image zero-shot": ("zero_shot", "digit/image", "accuracy"),
    "audio->image": ("retrieval", "audio->image", "r@1"),
}


def _avmnist_config(names: list[str], epochs: int, seed: int, root: Path, init: Path | None) -> dict:
    cfg = yaml.safe_load((EXAMPLES / "avmnist.yaml").read_text())
    cfg["modalities"] = {m: v for m, v in cfg["modalities"].items() if m in names}
    cfg["data"]["root"] = str(root)
    for task in cfg["eval"]["zero_shot"]:
        task["targets"] = [t for t in task["targets"] if t in names]
    cfg["train"].update(epochs=epochs, seed=seed, progress=False)
    if init is not None:  # binding data: images with their audio, no text
        cfg["model"]["init"] = str(init)
        cfg["data"]["missing"] = [{"modality": "text", "rate": 1.0}]
    return cfg


def _avmnist_train(cfg: dict, out: Path) -> dict:
    metrics = _run(cfg, out)
    found = {}
    for name, (section, key, stat) in AV_KEYS.items():
        if key in metrics.get(section, {}):
            found[name] = metrics[section][key][stat]
    return found


def avmnist(work: Path, seeds: int, epochs: int, root: Path) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {"base": [], "bound": [], "joint": []}
    for seed in range(seeds):
        base = work / f"av-base-{seed}"
        results["base"].append(
            _avmnist_train(_avmnist_config(["image", "text"], epochs, seed, root, None), base)
        )
        cfg = _avmnist_config(["image", "audio", "text"], epochs, seed, root, base)
        results["bound"].append(_avmnist_train(cfg, work / f"av-bound-{seed}"))
        cfg = _avmnist_config(["image", "audio", "text"], epochs, seed, root, None)
        results["joint"].append(_avmnist_train(cfg, work / f"av-joint-{seed}"))
        print(f"AV-MNIST seed {seed}: " + "; ".join(f"{k} {v}" for k, v in results.items() if v), flush=True)
    return results


def _cell(rows: list[dict], key: str) -> str:
    values = [r[key] for r in rows if key in r]
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {spread:.3f}"


def shapes(work: Path, seeds: int, n: int, epochs: int) -> dict[str, list[dict]]:
    results: dict[str, list[dict]] = {"base": [], "bound": [], "joint": []}
    for seed in range(seeds):
        base = work / f"base-{seed}"
        results["base"].append(_train(_config(["image", "caption", "sound"], n, epochs, seed), base))
        binding = {"missing": [{"modality": "caption", "rate": 1.0}, {"modality": "sound", "rate": 1.0}]}
        cfg = _config(list(MODALITIES), n, epochs, seed, data=binding, model={"init": str(base)})
        results["bound"].append(_train(cfg, work / f"bound-{seed}"))
        results["joint"].append(_train(_config(list(MODALITIES), n, epochs, seed), work / f"joint-{seed}"))
        print(f"seed {seed}: " + "; ".join(f"{k} {v}" for k, v in results.items() if v), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--part", choices=["both", "shapes", "avmnist"], default="both")
    parser.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "data" / "avmnist")
    args = parser.parse_args()
    n, epochs, seeds = (1000, 8, 2) if args.quick else (3000, 30, 3)
    av_epochs = 5 if args.quick else 15
    seeds = args.seeds or seeds
    work = Path(tempfile.mkdtemp(prefix="omnibind-bind-"))
    saved: dict = {"seeds": seeds}
    if args.part in ("both", "shapes"):
        results = shapes(work, seeds, n, epochs)
        print(f"\nR@1 on the test split, builtin:shapes n={n}, {epochs} epochs, {seeds} seeds (mean ± std):")
        print(" | ".join(["model", *PAIRS]))
        for model, rows in results.items():
            print(" | ".join([model, *(_cell(rows, p) for p in PAIRS)]))
        saved.update(n=n, epochs=epochs, results=results)
    if args.part in ("both", "avmnist"):
        av = avmnist(work, seeds, av_epochs, args.root)
        print(f"\nAV-MNIST, held-out speaker, {av_epochs} epochs, {seeds} seeds (mean ± std; chance ~0.10):")
        print(" | ".join(["model", *AV_KEYS]))
        for model, rows in av.items():
            print(" | ".join([model, *(_cell(rows, key) for key in AV_KEYS)]))
        saved.update(avmnist_epochs=av_epochs, avmnist=av)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import save

    print(f"written {save('bind' if args.part == 'both' else f'bind_{args.part}', saved)}")


if __name__ == "__main__":
    main()
