"""Training throughput of the demo model, and the share of each step spent waiting for data.

Data: ``builtin:shapes`` (synthetic; image 32x32, caption, 0.5 s sound, table; 20% of values missing),
the demo's CLIP config. omnibind prepares every value once (load, check, transform, stack) so a batch is
an index gather; the baseline in the same run prepares each batch's items from their raw values at
every step, as a plain ``Dataset.__getitem__`` + collate would. Both run the same model, objective and
optimiser for the same steps; the table shows items/s, the share of step time spent on data, and the
ratio.

    python benchmarks/train_throughput.py [--quick] [--steps N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from omnibind.data.dataset import Dataset
from omnibind.data.loading import build_kinds, build_splits
from omnibind.model import OmniModel
from omnibind.objectives import create_objective
from omnibind.training.demo import preset
from omnibind.training.optim import param_groups


def run(steps: int, naive: bool, batch_size: int) -> dict[str, float]:
    cfg = preset("shapes-clip", ["data.source=builtin:shapes?n=2000&missing=0.2"])
    kinds = build_kinds(cfg)
    t0 = time.perf_counter()
    train_set: Dataset = build_splits(cfg, kinds, ("train",), progress=False).datasets["train"]
    prepare_s = time.perf_counter() - t0
    records = train_set.records
    torch.manual_seed(0)
    model = OmniModel(cfg)
    objective = create_objective(cfg.objective.name, **cfg.objective.options)
    optimizer = torch.optim.AdamW(param_groups([model, objective], 0.01), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    data_s = total_s = 0.0
    for step in range(steps):
        idx = torch.randperm(len(train_set), generator=gen)[:batch_size]
        t0 = time.perf_counter()
        if naive:  # prepare from raw values every step, as a per-item __getitem__ would
            from omnibind.data.dataset import prepare_dataset

            batch = prepare_dataset([records[i] for i in idx.tolist()], kinds, progress=False)[0].batch(
                torch.arange(len(idx))
            )
        else:
            batch = train_set.batch(idx)
        t1 = time.perf_counter()
        out = objective(model.encode(batch), batch.present, model.logit_scale)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        t2 = time.perf_counter()
        if step >= 2:  # skip warm-up steps
            data_s += t1 - t0
            total_s += t2 - t0
    timed = steps - 2
    return {
        "items_per_s": timed * batch_size / total_s,
        "data_wait": data_s / total_s,
        "prepare_s": prepare_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    steps, repeats = (12, 1) if args.quick else (args.steps, args.repeats)
    from _common import save

    rows = {}
    for name, naive in (("omnibind (prepared once)", False), ("baseline (prepare per batch)", True)):
        runs = [run(steps, naive, 128) for _ in range(repeats)]
        rows[name] = {
            "items_per_s": statistics.median(r["items_per_s"] for r in runs),
            "items_per_s_spread": max(r["items_per_s"] for r in runs) - min(r["items_per_s"] for r in runs),
            "data_wait": statistics.median(r["data_wait"] for r in runs),
            "prepare_once_s": statistics.median(r["prepare_s"] for r in runs),
        }
    base = rows["baseline (prepare per batch)"]["items_per_s"]
    print(f"{'loader':30s} {'items/s (median)':>17s} {'spread':>8s} {'data wait':>10s} {'vs baseline':>12s}")
    for name, r in rows.items():
        print(
            f"{name:30s} {r['items_per_s']:17.0f} {r['items_per_s_spread']:8.0f} "
            f"{100 * r['data_wait']:9.1f}% {r['items_per_s'] / base:11.2f}x"
        )
    once = rows["omnibind (prepared once)"]["prepare_once_s"]
    print(f"\nomnibind prepares the 1,600 training items once in {once:.1f} s before the first step.")
    print(f"written {save('train_throughput', {'rows': rows, 'steps': steps, 'repeats': repeats})}")


if __name__ == "__main__":
    main()
