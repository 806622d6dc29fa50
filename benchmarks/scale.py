"""GradCache memory and time: peak memory and step time of one training step, batches 256..8192, with and
without ``train.micro_batch_size``.

Each configuration runs in a fresh process: it prepares ``batch`` shapes items (image 32x32 with the conv
encoder, caption with the transformer encoder, InfoNCE over both), records its resident memory, runs
``--steps`` full training steps (forward, backward, AdamW) and reports the growth of the peak resident set
over that baseline (the step's own memory: activations, gradients, optimiser state; the kernel's peak
counter is reset after the data is prepared, through ``/proc/self/clear_refs``) and the median step time.
The issue's target: a batch of 2048 in micro-batches of 64 peaks at most 2x a plain batch of 128.

    python benchmarks/scale.py                 # batches 128, 256 .. 8192, plain and micro-batches of 64
    python benchmarks/scale.py --quick         # 128, 512, 2048
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _config(batch: int, micro: int) -> dict:
    return {
        "modalities": {
            "image": {"kind": "image", "size": 32, "encoder": {"name": "conv2d", "width": 32}},
            "caption": {"kind": "text", "encoder": {"name": "transformer", "width": 64, "depth": 2}},
        },
        "data": {
            "source": f"builtin:shapes?n={batch}&missing=0.1&image_size=32",
            "val_fraction": 0,
            "test_fraction": 0,
        },
        "model": {"dim": 64},
        "objective": {"name": "infonce"},
        "train": {
            "batch_size": batch,
            "micro_batch_size": micro,
            "threads": 1,
            "device": "cpu",
            "progress": False,
            "warmup_steps": 0,
        },
    }


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Reset the kernel's peak resident set (VmHWM) of this process; False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(batch: int, micro: int, steps: int) -> dict:
    """One configuration, in this process: prepare, measure the baseline, run the steps."""
    import torch

    from omnibind.config import config_from_dict
    from omnibind.data.loading import build_kinds, build_splits
    from omnibind.model import OmniModel
    from omnibind.objectives import create_objective
    from omnibind.training.gradcache import cached_step
    from omnibind.training.precision import Precision

    torch.set_num_threads(1)
    cfg = config_from_dict(_config(batch, micro))
    data = build_splits(cfg, build_kinds(cfg), wanted=("train",), fit=True, progress=False).datasets["train"]
    model = OmniModel(cfg)
    objective = create_objective("infonce")
    optimizer = torch.optim.AdamW(list(model.parameters()), lr=1e-3)
    precision = Precision("fp32", torch.device("cpu"))
    indices = torch.arange(len(data))

    def loss_fn(embeddings: dict, present: torch.Tensor) -> object:  # the objective, scale bound
        return objective(embeddings, present, model.logit_scale)

    base = _status_kib("VmRSS")
    exact = _reset_peak()  # so the peak below is the steps' own, not the data preparation's
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        if micro:
            cached_step(model, loss_fn, data.batch, indices, micro, precision)
        else:
            batch_ = data.batch(indices)
            out = objective(model.encode(batch_), batch_.present, model.logit_scale)
            out.loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - t0)
    peak = _status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "batch": batch,
        "micro": micro,
        "step_mib": (peak - base) / 1024,
        "s_per_step": statistics.median(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--micro", type=int, default=64)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    batches = [128, 512, 2048] if args.quick else [128, 256, 512, 1024, 2048, 4096, 8192]
    rows = []
    print(f"{'batch':>6s} {'micro':>6s} {'step memory MiB':>16s} {'s/step':>8s}")
    for batch in batches:
        for micro in (0, args.micro):
            if micro and (micro >= batch or batch % micro):
                continue
            cmd = [sys.executable, __file__, "--child", str(batch), str(micro), str(args.steps)]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{batch:6d} {micro or '-':>6} {row['step_mib']:16.1f} {row['s_per_step']:8.2f}")
    by = {(r["batch"], r["micro"]): r for r in rows}
    if (128, 0) in by and (2048, args.micro) in by:
        ratio = by[(2048, args.micro)]["step_mib"] / max(by[(128, 0)]["step_mib"], 1e-9)
        print(
            f"\nbatch 2048 in micro-batches of {args.micro} / plain batch 128: {ratio:.2f}x step memory "
            "(target <= 2x)"
        )
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import save

    print(f"written {save('scale', {'rows': rows, 'micro': args.micro, 'steps': args.steps})}")


if __name__ == "__main__":
    main()
