"""What does a supervised training step cost per fusion head as M grows, and what does balancing add?

Usage: ``python benchmarks/fusion_cost.py [--quick] [--steps N]``

Data: synthetic. M modalities of kind ``embedding`` (32 standard normal numbers per item, fresh batches
drawn from a pool of 8), each through the real ``mlp`` encoder (2 blocks of width 64) and projection to
D = 64 of an omnibind ``Classifier``, then the fusion head (default options), 10 random classes, batch
64, every modality present. The step is the supervised loop's (``training/classify.py``): embed, mask,
head, loss, the balance hooks, gradient clipping at 1, AdamW step.

Time: per configuration, the median over the timed steps (after warm-up); the configurations of one
head and M take their steps in turn, so a change of machine load hits them alike. Spread: (p90 - p10)
/ median.
Table 1: each head at M = 2, 4, 8, with time / M and the ratio to M = 2 (O(M) growth shows as a
roughly constant time / M once the per-step overhead is paid). Table 2: each balance method on the
``late`` and ``attention`` heads, as the ratio to the plain step of the same head and M, timed in turn
with it: modality dropout (p = 0.3); ``ogm_ge`` without and with Gaussian enhancement; ``agm`` exact
(all 2^M - 1 subsets for every item, ``budget: null``); ``agm`` Monte-Carlo on every item (one order
and its reverse per item, ``budget: null``); ``agm`` Monte-Carlo with its default budget (head rows
<= 3 B: 12 of the 64 items at M = 8; at M <= 4 the defaults would use exact Shapley, forced off here);
``mmpareto``.

One torch thread, CPU only. What it does not show: GPU behaviour, large encoders (where the head and
the extra head passes of AGM matter less, and MMPareto's second backward through the encoders more),
missing modalities (fewer rows per encoder), accuracy (see ``benchmarks/fusion.py``).
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace
from typing import Any

import torch

from omnibind.config import config_from_dict
from omnibind.data.batch import Batch
from omnibind.fusion.classifier import Classifier
from omnibind.training.balance import BalancePolicy, StepContext, create_policies, modality_groups
from omnibind.training.classify import criterion_for
from omnibind.training.optim import param_groups

HEADS = ("late", "attention", "sequential", "experts")
BALANCED_HEADS = ("late", "attention")
SIZES = (2, 4, 8)
METHODS: dict[str, dict[str, Any]] = {  # name -> task fields
    "plain": {},
    "dropout": {"modality_dropout": 0.3},
    "ogm_ge": {"balance": "ogm_ge"},
    "ogm_ge+GE": {"balance": "ogm_ge", "balance_options": {"gaussian": True}},
    "agm exact": {"balance": "agm", "balance_options": {"exact_max": 8, "budget": None}},
    "agm mc all": {"balance": "agm", "balance_options": {"exact_max": 0, "budget": None}},
    "agm mc": {"balance": "agm", "balance_options": {"exact_max": 0}},
    "mmpareto": {"balance": "mmpareto"},
}
BATCH, INPUT, DIM, CLASSES, POOL = 64, 32, 64, 10, 8


def build(head: str, m: int, method: str) -> Any:
    """A classifier, its optimiser, the policies and a pool of batches; returns a closure doing one step."""
    names = [f"m{j}" for j in range(m)]
    raw = {
        "modalities": {
            n: {"kind": "embedding", "dim": INPUT, "encoder": {"name": "mlp", "hidden": 64}} for n in names
        },
        "model": {"dim": DIM},
        "task": {"type": "classify", "head": head, "classes": [str(c) for c in range(CLASSES)]},
    }
    torch.manual_seed(0)
    model = Classifier(config_from_dict(raw))
    fields = {"modality_dropout": 0.0, "balance": "", "balance_options": {}, **METHODS[method]}
    policies = create_policies(SimpleNamespace(**fields))
    custom = [p for p in policies if type(p).backward is not BalancePolicy.backward]
    backward = custom[0] if custom else BalancePolicy()
    optimizer = torch.optim.AdamW(param_groups([model], 0.01), lr=1e-3)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    groups = modality_groups(model.encoder, model.modalities)
    criterion = criterion_for(False)
    generator = torch.Generator().manual_seed(1)
    present = torch.ones(BATCH, m, dtype=torch.bool)
    pool = [
        (
            Batch(
                [str(i) for i in range(BATCH)],
                tuple(names),
                {n: torch.randn(BATCH, INPUT) for n in names},
                present,
            ),
            torch.randint(CLASSES, (BATCH,)),
        )
        for _ in range(POOL)
    ]
    counter = [0]

    def step() -> None:
        batch, y = pool[counter[0] % POOL]
        model.train()
        embeddings = model.embed(batch)  # {modality: [B, D]}
        mask = batch.present
        for policy in policies:
            mask = policy.mask(mask, generator)
        out = model.head(embeddings, mask)
        loss = model.head.loss(out, y, criterion)
        ctx = StepContext(counter[0], embeddings, mask, y, model.head, criterion, groups, 10_000)
        optimizer.zero_grad(set_to_none=True)
        backward.backward(loss, ctx)
        for policy in policies:
            policy.after_backward(ctx)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        counter[0] += 1

    return step


def time_group(steps_by_name: dict[str, Any], warmup: int, steps: int) -> dict[str, list[float]]:
    """Milliseconds of every step of each configuration of a group, interleaved step by step.

    Every configuration takes one step in turn, so a change of machine load falls on all of them alike
    and their ratios stay meaningful on a shared machine.
    """
    for _ in range(warmup):
        for step in steps_by_name.values():
            step()
    out: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for _ in range(steps):
        for name, step in steps_by_name.items():
            t0 = time.perf_counter()
            step()
            out[name].append((time.perf_counter() - t0) * 1e3)
    return out


def summary(times: list[float]) -> tuple[float, float]:
    """Median and the spread (p90 - p10) / median."""
    qs = statistics.quantiles(times, n=10) if len(times) >= 2 else [times[0]] * 9
    median = statistics.median(times)
    return median, (qs[-1] - qs[0]) / median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few timed steps (about a minute)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per configuration")
    args = parser.parse_args()
    steps = args.steps or (8 if args.quick else 30)
    warmup = 3
    torch.set_num_threads(1)
    from _common import save

    ms: dict[tuple[str, int, str], tuple[float, float]] = {}
    for h in HEADS:
        methods = list(METHODS) if h in BALANCED_HEADS else ["plain"]
        for m in SIZES:
            group = {k: build(h, m, k) for k in methods}
            times = time_group(group, warmup, steps)
            ms.update({(h, m, k): summary(t) for k, t in times.items()})
            print(f"{h} M={m}: done", flush=True)
    head_rows = []
    print(f"\n{'head':<11} {'M':>2} | {'ms/step':>8} {'spread':>6} | {'ms / M':>7} | {'vs M=2':>6}")
    print("-" * 52)
    for h in HEADS:
        for m in SIZES:
            median, spread = ms[(h, m, "plain")]
            ratio = median / ms[(h, 2, "plain")][0]
            head_rows.append({"head": h, "M": m, "median_ms": median, "spread": spread, "ratio_to_m2": ratio})
            print(f"{h:<11} {m:>2} | {median:8.2f} {spread:6.0%} | {median / m:7.2f} | {ratio:6.2f}")

    balance_rows = []
    methods = [k for k in METHODS if k != "plain"]
    print(f"\n{'head':<10} {'M':>2} {'plain ms':>9} | " + " | ".join(f"{k:>10}" for k in methods))
    print("-" * (25 + 13 * len(methods)))
    for h in BALANCED_HEADS:
        for m in SIZES:
            plain = ms[(h, m, "plain")][0]
            cells_out = []
            for k in methods:
                median, spread = ms[(h, m, k)]
                balance_rows.append(
                    {
                        "head": h,
                        "M": m,
                        "method": k,
                        "median_ms": median,
                        "spread": spread,
                        "ratio": median / plain,
                    }
                )
                cells_out.append(f"{median / plain:9.2f}x")
            print(f"{h:<10} {m:>2} {plain:9.2f} | " + " | ".join(f"{c:>10}" for c in cells_out))
    mc8 = [r["ratio"] for r in balance_rows if r["method"] == "agm mc" and r["M"] == 8]
    print(f"\nAGM Monte-Carlo at M = 8: {', '.join(f'{x:.2f}x' for x in mc8)} plain (target < 2x)")

    path = save(
        "fusion_cost",
        {
            "benchmark": "fusion_cost",
            "quick": args.quick,
            "steps": steps,
            "warmup": warmup,
            "torch_threads": 1,
            "data": (
                f"synthetic: M embedding modalities of {INPUT} N(0, 1) numbers, mlp encoder (2 x 64) + "
                f"projection to D = {DIM}, {CLASSES} random classes, batch {BATCH}, all present"
            ),
            "time": "median ms of one step (forward, backward, clip, AdamW); spread = (p90 - p10) / median",
            "heads": head_rows,
            "balance": balance_rows,
            "agm_mc_m8_below_2x": all(x < 2 for x in mc8),
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
