"""Sharded embedding: items/s of ``omnibind embed RUN --out DIR`` with 1 process against 2 (torchrun).

Trains a small model on ``builtin:shapes`` (a few steps: the speed does not depend on its quality), then
embeds N items into parts, each configuration in a fresh folder, timing the whole command as a user runs
it (start-up included) and, separately, the embedding itself (from the first part file to the last).

    python benchmarks/embed_parts.py            # N = 20,000
    python benchmarks/embed_parts.py --items 5000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _model(work: Path) -> Path:
    cfg = {
        "modalities": {
            "image": {"kind": "image", "size": 32, "encoder": {"name": "conv2d", "width": 32}},
            "caption": {"kind": "text"},
            "sound": {"kind": "audio", "sample_rate": 8000, "seconds": 0.5, "n_mels": 32, "n_fft": 256},
        },
        "data": {"source": "builtin:shapes?n=400"},
        "model": {"dim": 64},
        "train": {"epochs": 1, "max_steps": 5, "batch_size": 64, "progress": False},
    }
    path = work / "cfg.yaml"
    path.write_text(json.dumps(cfg))
    subprocess.run(
        [sys.executable, "-m", "omnibind", "train", str(path), "--out", str(work / "run"), "--no-eval"],
        check=True,
        capture_output=True,
    )
    return work / "run"


def _embed(run: Path, data: str, out: Path, nproc: int) -> dict:
    args = ["-m", "omnibind", "embed", str(run), "--data", data, "--out", str(out), "--part-size", "1000"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd = (launcher if nproc > 1 else [sys.executable]) + args
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - t0
    stamps = sorted(p.stat().st_mtime for p in out.glob("part-*.parquet"))
    listing = json.loads((out / "parts.json").read_text())
    first_part = listing["parts"][0]["items"]
    steady = (listing["items"] - first_part * nproc) / max(stamps[-1] - stamps[nproc - 1], 1e-9)
    return {
        "nproc": nproc,
        "items": listing["items"],
        "wall_s": wall,
        "items_per_s": listing["items"] / wall,
        "steady_items_per_s": steady,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=20000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="omnibind-embed-parts-"))
    run = _model(work)
    data = f"builtin:shapes?n={args.items}&missing=0.2"
    rows = [_embed(run, data, work / f"out-{n}", n) for n in (1, 2)]
    base = rows[0]
    print(
        f"\nomnibind embed, {args.items} shapes items (image 32x32 conv, caption, sound), parts of 1000, "
        "1 torch thread per process:"
    )
    header = ["processes", "wall s", "items/s (wall)", "items/s (steady)", "x vs 1 (steady)"]
    print(" | ".join(header))
    for r in rows:
        ratio = r["steady_items_per_s"] / base["steady_items_per_s"]
        cells = [
            f"{r['nproc']}",
            f"{r['wall_s']:.1f}",
            f"{r['items_per_s']:.0f}",
            f"{r['steady_items_per_s']:.0f}",
        ]
        print(" | ".join([*cells, f"{ratio:.2f}"]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import save

    print(f"written {save('embed_parts', {'rows': rows})}")


if __name__ == "__main__":
    main()
