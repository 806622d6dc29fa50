"""How fast and how big are omnibind's contrastive objectives next to the upstream formulas?

Usage: ``python benchmarks/objectives.py [--quick] [--repeats K]``

Times forward + backward of ``infonce_loss`` and ``symile_loss`` ("n" and "n2") against straightforward
re-implementations of the upstream formulas written here (open_clip ClipLoss per pair; Symile with one
``randperm`` shuffle per non-anchor; Symile "n_squared" materialising all N^(M-1) logits at once).

Data: synthetic, standard normal rows L2-normalised, float32, every item present (the baselines have
no notion of a missing item), D = 256, s = 10. Figures are CPU-only and single-process.

Time: median over repeats of one forward + backward, and the spread (max - min) / median.
Memory: growth of the process's peak resident set size during one forward + backward
(``VmHWM`` after resetting it through ``/proc/self/clear_refs``, minus ``VmRSS`` before), with glibc's
mmap threshold pinned to 64 KiB and ``malloc_trim`` before each run so freed tensors go back to the OS.
It includes allocator slack and thread buffers and excludes the inputs; it is not torch's own count.
What the numbers do not show: GPU behaviour, missing-modality batches, multi-process gathering.
"""

from __future__ import annotations

import argparse
import ctypes
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from omnibind.objectives import infonce_loss, symile_loss  # noqa: E402

DIM = 256
SCALE = 10.0
BASELINE_BYTES = 4e9  # skip a baseline whose materialised tensors would pass ~4 GB


# ---- baselines: the upstream formulas, written out plainly --------------------------------------


def baseline_infonce(xs: list[torch.Tensor]) -> torch.Tensor:
    """open_clip ClipLoss on every unordered pair (two logit matrices per pair), mean over pairs."""
    labels = torch.arange(xs[0].shape[0])
    losses = []
    for a, b in itertools.combinations(xs, 2):
        per_a = SCALE * a @ b.T
        per_b = SCALE * b @ a.T
        losses.append((F.cross_entropy(per_a, labels) + F.cross_entropy(per_b, labels)) / 2)
    return torch.stack(losses).mean()


def baseline_symile_n(xs: list[torch.Tensor]) -> torch.Tensor:
    """Symile O(N): shuffle each non-anchor, true tuple on the diagonal, CE per anchor, mean."""
    n = xs[0].shape[0]
    labels = torch.arange(n)
    losses = []
    for i, x in enumerate(xs):
        others = [y for j, y in enumerate(xs) if j != i]
        shuffled = math.prod(y[torch.randperm(n)] for y in others)  # [N, D]
        logits = SCALE * x @ shuffled.T
        positive = SCALE * (x * math.prod(others)).sum(dim=1)
        logits = logits.clone()
        logits[labels, labels] = positive
        losses.append(F.cross_entropy(logits, labels))
    return torch.stack(losses).mean()


def baseline_symile_n2(xs: list[torch.Tensor]) -> torch.Tensor:
    """Symile O(N^2): every N^(M-1) tuple materialised as one [N, N^(M-1)] logit matrix per anchor."""
    n = xs[0].shape[0]
    letters = "bcdefg"
    losses = []
    for i, x in enumerate(xs):
        others = [y for j, y in enumerate(xs) if j != i]
        spec = ",".join(["at"] + [f"{letters[k]}t" for k in range(len(others))])
        logits = SCALE * torch.einsum(f"{spec}->a{letters[: len(others)]}", x, *others)
        logits = logits.reshape(n, -1)
        target = sum(torch.arange(n) * n**k for k in range(len(others)))  # flat index of (a, a, ..)
        losses.append(F.cross_entropy(logits, target))
    return torch.stack(losses).mean()


def ours(kind: str, names: list[str], generator: torch.Generator):
    def run(xs: list[torch.Tensor]) -> torch.Tensor:
        emb = dict(zip(names, xs, strict=True))
        if kind == "infonce":
            return infonce_loss(emb, None, SCALE).loss
        return symile_loss(emb, None, SCALE, negatives=kind.split("-")[1], generator=generator).loss

    return run


# ---- measurement ------------------------------------------------------------------------------------


_LIBC = ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None
if _LIBC is not None:
    _LIBC.mallopt(-3, 65536)  # M_MMAP_THRESHOLD: fixed, so large buffers are mmapped and unmapped


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def peak_rss_growth_mb(fn, xs) -> float | None:
    """Peak RSS growth over one forward + backward, in MiB (None where /proc is unavailable)."""
    if _LIBC is None or not Path("/proc/self/clear_refs").exists():
        return None
    _LIBC.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    fn(xs).backward()
    return (_status_kb("VmHWM") - before) / 1024


def time_ms(fn, xs, repeats: int) -> tuple[float, float]:
    """Median milliseconds of forward + backward and the spread (max - min) / median."""
    for _ in range(2):  # warm-up
        fn(xs).backward()
    times = []
    for _ in range(repeats):
        for x in xs:
            x.grad = None
        start = time.perf_counter()
        fn(xs).backward()
        times.append((time.perf_counter() - start) * 1e3)
    median = statistics.median(times)
    return median, (max(times) - min(times)) / median


def skip_reason(kind: str, impl: str, n: int, m: int, flop_budget: float) -> str | None:
    if kind != "symile-n2":
        return None
    if m * n**m * DIM > flop_budget:
        return f"skipped: M*N^M*D = {m * n**m * DIM:.1e} > budget {flop_budget:.0e}"
    # Baseline keeps logits, their softmax gradient and einsum's [N^(M-1), D]-sized intermediates.
    if impl == "baseline" and 4 * (3 * n**m + n ** (m - 1) * DIM) * m > BASELINE_BYTES:
        return "skipped: baseline would materialise > 4 GB"
    return None


def machine() -> dict[str, object]:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "command": " ".join([sys.executable, *sys.argv]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small N only (about a minute)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per cell")
    args = parser.parse_args()
    sizes = [64, 128, 256] if args.quick else [256, 1024, 4096]
    repeats = args.repeats or (5 if args.quick else 7)
    flop_budget = 2e9 if args.quick else 1e11
    baselines = {"infonce": baseline_infonce, "symile-n": baseline_symile_n, "symile-n2": baseline_symile_n2}

    rows = []
    header = (
        f"{'objective':<10} {'M':>2} {'N':>5} | {'ours ms':>9} {'±':>5} | {'base ms':>9} {'±':>5} | "
        f"{'time':>5} | {'ours MiB':>8} {'base MiB':>8} {'mem':>5} | note"
    )
    print(header)
    print("-" * len(header))
    for kind, m, n in itertools.product(baselines, [2, 3, 4], sizes):
        names = [f"m{k}" for k in range(m)]
        g = torch.Generator().manual_seed(0)
        xs = [F.normalize(torch.randn(n, DIM, generator=g), dim=-1).requires_grad_(True) for _ in range(m)]
        row: dict[str, object] = {"objective": kind, "M": m, "N": n, "D": DIM, "dtype": "float32"}
        notes = []
        for impl, fn in (("ours", ours(kind, names, g)), ("baseline", baselines[kind])):
            reason = skip_reason(kind, impl, n, m, flop_budget)
            if reason:
                notes.append(f"{impl} {reason}")
                row[impl] = None
                continue
            median, spread = time_ms(fn, xs, repeats)
            row[impl] = {
                "median_ms": median,
                "spread": spread,
                "peak_rss_growth_mib": peak_rss_growth_mb(fn, xs),
            }
        if kind == "symile-n2" and m == 2:
            notes.append("upstream n_squared crashes for M=2; baseline = plain N x N logits")
        ours_r, base_r = row["ours"], row["baseline"]
        row["time_ratio"] = ours_r["median_ms"] / base_r["median_ms"] if ours_r and base_r else None
        mem_ok = ours_r and base_r and ours_r["peak_rss_growth_mib"] and base_r["peak_rss_growth_mib"]
        row["memory_ratio"] = (
            ours_r["peak_rss_growth_mib"] / base_r["peak_rss_growth_mib"] if mem_ok else None
        )
        row["note"] = "; ".join(notes)
        rows.append(row)
        print(_format_row(row), flush=True)

    result = {
        "benchmark": "objectives",
        "machine": machine(),
        "repeats": repeats,
        "quick": args.quick,
        "data": "synthetic: standard normal rows, L2-normalised, float32, all present; s = 10",
        "time": "median ms of forward+backward; spread = (max - min) / median",
        "memory": "peak RSS growth (VmHWM reset via /proc/self/clear_refs) over one forward+backward",
        "rows": rows,
    }
    out = Path(__file__).resolve().parent / "results" / "objectives.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}  ({machine()['cpu']}, {os.cpu_count()} cores, torch {torch.__version__})")


def _format_row(row: dict) -> str:
    def cell(r, key, fmt):
        return format(r[key], fmt) if r and r.get(key) is not None else "-"

    o, b = row["ours"], row["baseline"]
    spread_o = f"{o['spread']:.0%}" if o else "-"
    spread_b = f"{b['spread']:.0%}" if b else "-"
    ratio = f"{row['time_ratio']:.2f}" if row["time_ratio"] else "-"
    mem = f"{row['memory_ratio']:.2f}" if row["memory_ratio"] else "-"
    return (
        f"{row['objective']:<10} {row['M']:>2} {row['N']:>5} | "
        f"{cell(o, 'median_ms', '9.2f')} {spread_o:>5} | "
        f"{cell(b, 'median_ms', '9.2f')} {spread_b:>5} | {ratio:>5} | "
        f"{cell(o, 'peak_rss_growth_mib', '8.1f')} {cell(b, 'peak_rss_growth_mib', '8.1f')} {mem:>5} | "
        f"{row['note']}"
    )


if __name__ == "__main__":
    main()
