"""Streaming data: peak memory against dataset size, and data throughput, through ``omnibind train``.

Data: an on-disk manifest of N items, each a 64x64 PNG (a coloured shape) and a caption, written once
under ``benchmarks/.data/pngN/`` (synthetic, made here).

1. **Memory flat in dataset size.** ``omnibind train`` for 10 steps (batch 64) on N = 2,000 and 20,000
   (and 200,000 with ``--full``), in-memory path (``data.cache: memory``, today's default below 100k
   items) against streaming (``data.cache: none``, ``train.workers: 2``). The peak is the largest sum of
   the resident memory of the trainer and its worker processes, sampled every 20 ms from ``/proc``.
   Target: streaming at 20,000 items at most 1.25x streaming at 2,000.
2. **Data throughput.** Items/s and the share of step time spent waiting for data, as ``omnibind train``
   prints them, with ``train.workers`` 0, 1 and 2, from the raw files (``data.cache: none``), from the
   disk cache (a second run over a filled ``data.cache: DIR``) and from shards (``omnibind shards``),
   beside a plain PyTorch loop (``torch.utils.data.DataLoader`` over the same PNGs, PIL decode, the same
   model, loss and optimiser) with the same worker counts.

    python benchmarks/data_scale.py            # memory at 2k/20k, throughput on 2k
    python benchmarks/data_scale.py --full     # memory also at 200k
    python benchmarks/data_scale.py --only throughput   # one part (results/data_scale_throughput.json)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / ".data"
COLOURS = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 220, 20), (200, 40, 200), (30, 200, 200)]
NAMES = ["red", "green", "blue", "yellow", "magenta", "cyan"]
SHAPES = ["square", "disc"]


def make_manifest(n: int) -> Path:
    """``benchmarks/.data/png{n}/items.jsonl`` with ``n`` PNGs (made once, reused)."""
    from PIL import Image, ImageDraw

    folder = DATA / f"png{n}"
    manifest = folder / "items.jsonl"
    if manifest.exists():
        return manifest
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        colour, shape = i % len(COLOURS), (i // len(COLOURS)) % len(SHAPES)
        x, y, r = 8 + (i * 7) % 40, 8 + (i * 13) % 40, 6 + (i * 5) % 10
        img = Image.new("RGB", (64, 64), (245, 245, 245))
        draw = ImageDraw.Draw(img)
        box = (x, y, x + 2 * r, y + 2 * r)
        (draw.rectangle if shape == 0 else draw.ellipse)(box, fill=COLOURS[colour])
        name = f"img/{i:07d}.png"
        img.save(folder / name)
        rows.append({"id": f"i{i}", "image": name, "caption": f"a {NAMES[colour]} {SHAPES[shape]}"})
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(manifest)
    return manifest


def config(source: str, cache: str, workers: int, steps: int) -> dict:
    return {
        "modalities": {
            "image": {"kind": "image", "size": 64, "encoder": {"name": "conv2d", "width": 16}},
            "caption": {"kind": "text", "encoder": {"name": "bag_of_tokens", "width": 32, "buckets": 1024}},
        },
        "data": {"source": source, "val_fraction": 0, "test_fraction": 0, "cache": cache},
        "model": {"dim": 32},
        "objective": {"name": "infonce"},
        "train": {
            "batch_size": 64,
            "max_steps": steps,
            "epochs": 1000,
            "warmup_steps": 0,
            "workers": workers,
            "threads": 1,
            "device": "cpu",
            "progress": False,
            "checkpoint_every": 100000,
        },
    }


def _tree_rss_kib(root: int) -> int:
    """Resident memory of ``root`` and all its descendants (KiB), from ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def run_train(cfg: dict, out: Path) -> dict:
    """``omnibind train`` in a subprocess: its peak process-tree RSS, items/s and data-wait share."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        json.dump(cfg, fh)
    cmd = [sys.executable, "-m", "omnibind", "train", fh.name, "--out", str(out), "--no-eval"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_kib(proc.pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    stdout, stderr = proc.communicate()
    done.set()
    watcher.join()
    os.unlink(fh.name)
    if proc.returncode:
        raise SystemExit(f"omnibind train failed:\n{stderr[-2000:]}")
    m = re.search(r"\(([\d.]+) items/s, (\d+)% of step time waiting for data\)", stdout)
    return {"peak_mib": peak / 1024, "items_per_s": float(m.group(1)), "data_wait": int(m.group(2)) / 100}


class PngCaptions:
    """The baseline's map-style dataset: PIL decode of each PNG to a float tensor, and its caption."""

    def __init__(self, manifest: Path) -> None:
        self.folder = manifest.parent
        self.rows = [json.loads(line) for line in manifest.read_text().splitlines()]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple:
        import numpy as np
        import torch
        from PIL import Image

        with Image.open(self.folder / self.rows[i]["image"]) as img:
            x = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(x).permute(2, 0, 1), self.rows[i]["caption"]


def collate_pairs(items: list) -> tuple:
    import torch

    return torch.stack([x for x, _ in items]), [t for _, t in items]


def plain_loop(manifest: Path, workers: int, steps: int) -> dict:
    """The baseline in this process: a plain DataLoader over the PNGs, the same model, loss, optimiser."""
    import torch

    from omnibind.config import config_from_dict
    from omnibind.model import OmniModel
    from omnibind.objectives import create_objective

    torch.set_num_threads(1)

    cfg = config_from_dict(config(str(manifest), "memory", 0, steps))
    model = OmniModel(cfg)
    objective = create_objective("infonce")
    optimizer = torch.optim.AdamW(list(model.parameters()), lr=1e-3)
    extra = (
        {"persistent_workers": True, "prefetch_factor": 2, "multiprocessing_context": "spawn"}
        if workers
        else {}
    )
    loader = torch.utils.data.DataLoader(
        PngCaptions(manifest),
        batch_size=64,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate_pairs,
        drop_last=True,
        **extra,
    )
    wait = total = 0.0
    done = 0
    it = iter(loader)
    next(it)  # start-up (worker spawn) is not part of the steady state, as in the trainer's first step
    while done < steps:
        t0 = time.perf_counter()
        try:
            images, captions = next(it)
        except StopIteration:
            it = iter(loader)
            images, captions = next(it)
        t1 = time.perf_counter()
        optimizer.zero_grad()
        z = {
            "image": model.encode_modality("image", images),
            "caption": model.encode_modality("caption", captions),
        }
        objective(z, None, model.logit_scale).loss.backward()
        optimizer.step()
        t2 = time.perf_counter()
        wait += t1 - t0
        total += t2 - t0
        done += 1
    return {"items_per_s": steps * 64 / total, "data_wait": wait / total}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="memory also at 200,000 items")
    parser.add_argument("--steps", type=int, default=10, help="steps per memory run")
    parser.add_argument("--throughput-steps", type=int, default=30)
    parser.add_argument("--only", choices=["memory", "throughput"], help="run one of the two parts")
    args = parser.parse_args()
    sizes = [2000, 20000] + ([200000] if args.full else [])
    work = Path(tempfile.mkdtemp(prefix="omnibind-data-scale-"))
    memory: list[dict] = []
    for n in sizes if args.only != "throughput" else []:
        manifest = make_manifest(n)
        for label, cache, workers in (
            ("in memory (today)", "memory", 0),
            ("streaming, 2 workers", "none", 2),
        ):
            if cache == "memory" and n > 20000:
                continue  # 200k decoded 64x64 images need ~10 GB: the path this issue replaces
            r = run_train(config(str(manifest), cache, workers, args.steps), work / f"m-{n}-{cache}")
            memory.append({"items": n, "path": label, **r})
            print(f"  {n:>7} items  {label:<22} peak {r['peak_mib']:8.0f} MiB", flush=True)
    if memory:
        print("\nPeak RSS (trainer + workers), 10 steps of batch 64, 64x64 PNG + caption:")
        print(f"{'items':>8} | {'path':<22} | {'peak MiB':>9} | {'x vs 2,000':>10}")
    for r in memory:
        base = next(b for b in memory if b["path"] == r["path"] and b["items"] == 2000)["peak_mib"]
        print(f"{r['items']:>8} | {r['path']:<22} | {r['peak_mib']:9.0f} | {r['peak_mib'] / base:10.2f}")
    rows = throughput(work, args.throughput_steps) if args.only != "memory" else []
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import save

    name = "data_scale" + (f"_{args.only}" if args.only else "")
    print(f"written {save(name, {'memory': memory, 'throughput': rows})}")


def throughput(work: Path, steps: int) -> list[dict]:
    """Items/s and the data-wait share of every (workers, path) pair, printed as a table."""
    manifest = make_manifest(2000)
    shards = work / "shards"
    cmd = [sys.executable, "-m", "omnibind", "shards", str(manifest), "--out", str(shards)]
    subprocess.run(cmd, check=True, capture_output=True)
    rows: list[dict] = []
    for workers in (0, 1, 2):
        cache_dir = work / f"cache-{workers}"
        fill = config(str(manifest), str(cache_dir), workers, 2000 // 64)  # one epoch fills the cache
        run_train(fill, work / f"fill-{workers}")
        for label, source, cache in (
            ("omnibind, raw files", str(manifest), "none"),
            ("omnibind, disk cache", str(manifest), str(cache_dir)),
            ("omnibind, shards", str(shards), "none"),
        ):
            r = run_train(config(source, cache, workers, steps), work / f"t-{workers}-{len(rows)}")
            rows.append({"workers": workers, "path": label, **r})
        plain = plain_loop(manifest, workers, steps)
        rows.append({"workers": workers, "path": "plain DataLoader loop", **plain})
    print(f"\nData throughput, {steps} steps of batch 64 on 2,000 items (1 torch thread per process):")
    print(f"{'workers':>7} | {'path':<22} | {'items/s':>8} | {'waiting for data':>16}")
    for r in rows:
        wait = 100 * r["data_wait"]
        print(f"{r['workers']:>7} | {r['path']:<22} | {r['items_per_s']:8.0f} | {wait:15.0f}%")
    return rows


if __name__ == "__main__":
    main()
