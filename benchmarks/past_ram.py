"""A local index past RAM: build time, resident memory of a search process and recall@10, by storage.

    python benchmarks/past_ram.py                 # 1M vectors (float32, float16, int8) and 5M (int8)
    python benchmarks/past_ram.py --sizes 200000  # a quick look

Vectors are synthetic (width 256, unit, 2,000 clusters with a decaying spectrum, as in serve_load.py),
added with ``Index.add_embeddings`` in batches of 100k under a one-modality ``embedding`` model: no encoder,
no raw values, no metadata. Each search runs in a fresh process that opens the index and answers 50 exact-k
queries (k = 10); its resident memory (``VmHWM``, the peak, and ``VmRSS``) is read from ``/proc`` and
compared with the float32 bytes of the vectors. Recall@10 is against exact top-10 computed here from the
same vectors. At the largest size two more search processes then run at once (10 queries each) and report
their proportional set size (``Pss``), which shows whether they share one copy of the mapped vectors;
latency is taken from the lone process only (two at once share the two cores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402
from serve_load import DIM, synthetic  # noqa: E402

BATCH = 100_000
QUERIES = 50
PAIR_QUERIES = 10  # each of two processes at once (memory only: their latencies share the cores)


def batches(n: int):
    for start in range(0, n, BATCH):
        stop = min(start + BATCH, n)
        yield start, stop, synthetic(stop - start, seed=start + 1)


def build(path: Path, model_dir: Path, n: int, storage: str, rerank: int) -> float:
    from omnibind.index import Index, SearchSettings

    began = time.perf_counter()
    index = Index.create(
        path, model_dir, SearchSettings(storage=storage, rerank=rerank, exact_threshold=2**62)
    )
    for start, stop, x in batches(n):
        index.add_embeddings([f"v{i}" for i in range(start, stop)], {"vec": x})
    return time.perf_counter() - began


def exact_top10(n: int, queries: np.ndarray) -> np.ndarray:
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start, _, x in batches(n):
        s = queries @ x.T
        top = np.argpartition(-s, 10, axis=1)[:, :10]
        best_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        best_i = np.concatenate([best_i, top + start], 1)
        keep = np.argsort(-best_s, axis=1)[:, :10]
        best_s, best_i = np.take_along_axis(best_s, keep, 1), np.take_along_axis(best_i, keep, 1)
    return best_i


def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _pss() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        if key in ("Rss", "Pss", "Pss_Anon", "Pss_File"):
            out[key] = int(value.split()[0]) * 1024
    return out


def child(index_dir: str, queries_file: str, out_file: str, sync: str | None) -> None:
    """A search process: open, answer the queries, report memory (and wait for the others when asked)."""
    from omnibind.index import Index

    queries = np.load(queries_file)
    began = time.perf_counter()
    index = Index.open(index_dir)
    opened = time.perf_counter() - began
    after_open = _status()
    times, ids = [], []
    method = ""
    for q in queries[:PAIR_QUERIES] if sync else queries:
        t = time.perf_counter()
        result = index.search(q, target="vec", k=10)
        times.append(time.perf_counter() - t)
        ids.append([int(h.id[1:]) for h in result.hits])
        method = result.method
    report = {
        "open_s": opened,
        "rss_after_open": after_open["VmRSS"],
        **_status(),
        "latency_ms_p50": float(np.median(times) * 1000),
        "latency_ms_p95": float(np.percentile(times, 95) * 1000),
        "ids": ids,
        "method": method,
    }
    if sync:
        Path(sync + f".ready-{Path(out_file).name}").touch()
        while not Path(sync + ".go").exists():
            time.sleep(0.05)
        report.update(_pss())
    Path(out_file).write_text(json.dumps(report))


def search_processes(index_dir: Path, queries: Path, work: Path, count: int) -> list[dict]:
    sync = str(work / "sync") if count > 1 else None
    outs = [work / f"out{i}.json" for i in range(count)]
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", str(index_dir), str(queries), str(out)]
            + (["--sync", sync] if sync else [])
        )
        for out in outs
    ]
    if sync:
        while not all(Path(sync + f".ready-{o.name}").exists() for o in outs):
            if any(p.poll() not in (None, 0) for p in procs):
                raise RuntimeError("a search process failed")
            time.sleep(0.1)
        Path(sync + ".go").touch()
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError("a search process failed")
    return [json.loads(o.read_text()) for o in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,5000000")
    parser.add_argument("--rerank", type=int, default=200)
    parser.add_argument(
        "--storages", default=None, help="Only these storages (default: all at 1M, int8 above)."
    )
    parser.add_argument("--work", default=None, help="Folder for the indexes (default: a temporary one).")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--sync", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, args.sync)
        return
    from omnibind.config import config_from_dict
    from omnibind.model import OmniModel

    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.work or tempfile.mkdtemp(prefix="past_ram-"))
    work.mkdir(parents=True, exist_ok=True)
    model_dir = OmniModel(
        config_from_dict({"modalities": {"vec": {"kind": "embedding", "dim": DIM}}, "model": {"dim": DIM}})
    ).save(work / "model")
    queries = synthetic(QUERIES, seed=987_654_321)
    np.save(work / "queries.npy", queries)
    rows = []
    try:
        for n in sizes:
            truth = exact_top10(n, queries)
            storages = ["float32", "float16", "int8"] if n <= 1_000_000 else ["int8"]
            if args.storages:
                storages = args.storages.split(",")
            for storage in storages:
                index_dir = work / f"ix-{n}-{storage}"
                seconds = build(index_dir, model_dir, n, storage, args.rerank)
                r = search_processes(index_dir, work / "queries.npy", work, 1)[0]
                recall = np.mean(
                    [
                        len(set(got) & set(want.tolist())) / 10
                        for got, want in zip(r["ids"], truth, strict=True)
                    ]
                )
                f32 = n * DIM * 4
                row = {
                    "n": n,
                    "storage": storage,
                    "method": r["method"],
                    "build_s": round(seconds, 1),
                    "open_s": round(r["open_s"], 2),
                    "peak_rss_mib": r["VmHWM"] / 2**20,
                    "peak_rss_over_f32": r["VmHWM"] / f32,
                    "rss_anon_mib": r["RssAnon"] / 2**20,
                    "rss_file_mib": r["RssFile"] / 2**20,
                    "recall_at_10": float(recall),
                    "p50_ms": r["latency_ms_p50"],
                    "p95_ms": r["latency_ms_p95"],
                }
                if n == max(sizes) and storage == "int8":  # sharing: two at once, memory only
                    reports = search_processes(index_dir, work / "queries.npy", work, 2)
                    row["two_processes_pss_mib"] = [x["Pss"] / 2**20 for x in reports]
                    row["two_processes_rss_mib"] = [x["Rss"] / 2**20 for x in reports]
                rows.append(row)
                print(json.dumps(row), flush=True)
                shutil.rmtree(index_dir)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"{'n':>9} {'storage':>8} {'build s':>8} {'open s':>7} {'peak RSS MiB':>13} {'RSS/f32':>8} "
        f"{'recall@10':>9} {'p50 ms':>8} {'p95 ms':>8}"
    )
    for r in rows:
        print(
            f"{r['n']:>9} {r['storage']:>8} {r['build_s']:>8.1f} {r['open_s']:>7.2f} "
            f"{r['peak_rss_mib']:>13.0f} {r['peak_rss_over_f32']:>8.2f} {r['recall_at_10']:>9.3f} "
            f"{r['p50_ms']:>8.1f} {r['p95_ms']:>8.1f}"
        )
        if "two_processes_pss_mib" in r:
            print(
                f"{'':>9} two search processes at once: Rss {r['two_processes_rss_mib'][0]:.0f} + "
                f"{r['two_processes_rss_mib'][1]:.0f} MiB, Pss {r['two_processes_pss_mib'][0]:.0f} + "
                f"{r['two_processes_pss_mib'][1]:.0f} MiB (shared pages counted once in total)"
            )
    save(
        "past_ram",
        {
            "rows": rows,
            "rerank": args.rerank,
            "queries": QUERIES,
            "dim": DIM,
            "data": "synthetic unit vectors (serve_load.synthetic)",
        },
    )


if __name__ == "__main__":
    main()
