"""Search speed: omnibind exact and two-stage (HNSW on a 64-d prefix + 256-d re-rank) vs faiss, adds, deletes.

    python benchmarks/search.py            # 1,000,000 x 256, 1,000 queries (several minutes)
    python benchmarks/search.py --quick    # 100,000 x 256, 200 queries (about a minute)

Data is SYNTHETIC: 2,000 Gaussian clusters in 256 dims with a decaying spectrum (variance of dim i ~ 1/i,
so the first 64 dims carry ~76% of it, a stand-in for a Matryoshka-trained model), rows L2-normalised;
queries come from the same distribution. Recall of the two-stage search is a property of this spectrum,
not of a real model; the speed columns transfer. faiss (optional, ``pip install faiss-cpu``) is the peer.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402


def make_data(n: int, nq: int, d: int = 256, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.arange(1, d + 1) ** 0.5).astype(np.float32)  # std ~ i^-1/2: variance ~ 1/i
    centres = rng.standard_normal((2000, d), dtype=np.float32) * scale

    def draw(count: int) -> np.ndarray:
        out = np.empty((count, d), np.float32)
        for s in range(0, count, 100_000):
            m = min(100_000, count - s)
            x = (
                centres[rng.integers(0, 2000, m)]
                + 0.5 * rng.standard_normal((m, d), dtype=np.float32) * scale
            )
            out[s : s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    return draw(n), draw(nq)


def median_ms(fn, args_list) -> float:
    times = []
    for a in args_list:
        t = time.perf_counter()
        fn(a)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f[:10]) & set(t[:10].tolist())) / 10 for f, t in zip(found, truth, strict=True)])
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--n", type=int, default=None)
    args = ap.parse_args()
    n = args.n or (100_000 if args.quick else 1_000_000)
    nq = 200 if args.quick else 1000
    n_add = n // 10
    from threadpoolctl import threadpool_limits

    from omnibind.index.search import SearchSettings, VectorSet

    print(f"data: synthetic, {n:,} x 256 float32, decaying spectrum (var ~ 1/i), {nq} queries")
    x, queries = make_data(n + n_add, nq)
    base, extra = x[:n], x[n:]
    rows: list[dict] = []
    single = queries[: min(nq, 100)]

    # (1) memory read bandwidth: a large numpy sum, one thread
    big = np.ones(1 << 28, np.float32)  # 1 GiB
    with threadpool_limits(1):
        bw = big.nbytes / min(_timeit(big.sum) for _ in range(5)) / 1e9
    del big
    scanned = base.nbytes
    print(
        f"measured read bandwidth (np.sum over 1 GiB, 1 thread): {bw:.1f} GB/s; "
        f"bytes per exact scan: {scanned / 1e6:.0f} MB"
    )

    # (2) exact single query
    exact = VectorSet(256, SearchSettings(exact_threshold=10**12))
    exact.add(np.arange(n), base)
    with threadpool_limits(1):
        ms = median_ms(lambda q: exact.search(q, 10), single)
    gbs = scanned / (ms / 1e3) / 1e9
    rows.append(
        {
            "method": "omnibind exact (einsum + topk), 1 thread",
            "ms_p50": ms,
            "gb_s": gbs,
            "of_bandwidth": gbs / bw,
            "recall@10": 1.0,
        }
    )
    truth_i, _ = exact.search_many(queries, 10)
    t0 = time.perf_counter()
    exact.search_many(queries, 10)
    rows.append(
        {
            "method": f"omnibind exact batched ({nq} queries)",
            "ms_p50": (time.perf_counter() - t0) * 1e3 / nq,
            "recall@10": 1.0,
        }
    )

    try:
        import faiss

        faiss.omp_set_num_threads(1)
        flat = faiss.IndexFlatIP(256)
        flat.add(base)
        ms = median_ms(lambda q: flat.search(q[None], 10), single)
        gbs = scanned / (ms / 1e3) / 1e9
        rows.append(
            {
                "method": "faiss IndexFlatIP, 1 thread",
                "ms_p50": ms,
                "gb_s": gbs,
                "of_bandwidth": gbs / bw,
                "recall@10": 1.0,
            }
        )
        flat = None
    except ImportError:
        faiss = None
        print("faiss-cpu not installed: faiss columns skipped")

    # (3) two-stage: HNSW on the 64-d prefix + 256-d re-rank
    two = VectorSet(
        256, SearchSettings(exact_threshold=0, prefix=64, shortlist=100, ef_search=100, threads=2)
    )
    t0 = time.perf_counter()
    two.add(np.arange(n), base)
    build = time.perf_counter() - t0
    for shortlist in (50, 100, 200):
        two.settings.shortlist = shortlist
        two.settings.ef_search = shortlist
        found = [two.search(q, 10)[0].tolist() for q in queries]
        ms = median_ms(lambda q: two.search(q, 10), single)
        rows.append(
            {
                "method": f"omnibind two-stage (HNSW 64-d, shortlist {shortlist}) build {build:.0f}s",
                "ms_p50": ms,
                "recall@10": recall(found, truth_i),
            }
        )

    if faiss is not None:
        faiss.omp_set_num_threads(2)
        hnsw = faiss.IndexHNSWFlat(256, 16, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 64
        t0 = time.perf_counter()
        hnsw.add(base)
        fbuild = time.perf_counter() - t0
        faiss.omp_set_num_threads(1)
        for ef in (64, 128, 256):
            hnsw.hnsw.efSearch = ef
            _, found = hnsw.search(queries, 10)
            ms = median_ms(lambda q: hnsw.search(q[None], 10), single)
            rows.append(
                {
                    "method": f"faiss HNSW 256-d ef {ef} build {fbuild:.0f}s",
                    "ms_p50": ms,
                    "recall@10": recall(found.tolist(), truth_i),
                }
            )
        hnsw = None

    # (4) adds and deletes through the Index (LanceDB commit + in-memory update, no rebuild)
    from omnibind.config import config_from_dict
    from omnibind.index import Index
    from omnibind.model import OmniModel

    model = OmniModel(
        config_from_dict({"modalities": {"vec": {"kind": "embedding", "dim": 256}}, "model": {"dim": 256}})
    )
    with tempfile.TemporaryDirectory() as tmp:
        settings = SearchSettings(exact_threshold=n // 2, prefix=64, shortlist=100, ef_search=100)
        ix = Index.create(Path(tmp) / "ix", model, settings)
        t0 = time.perf_counter()
        for s in range(0, n, 100_000):
            ix.add_embeddings(
                [f"b{i}" for i in range(s, min(s + 100_000, n))], {"vec": base[s : s + 100_000]}
            )
        initial = time.perf_counter() - t0
        t0 = time.perf_counter()
        for s in range(0, n_add, 10_000):
            ix.add_embeddings(
                [f"a{i}" for i in range(s, min(s + 10_000, n_add))], {"vec": extra[s : s + 10_000]}
            )
        add_s = time.perf_counter() - t0
        found_added = ix.search(extra[123], target="vec", k=1).hits[0].id == "a123"
        top = ix.search(queries[0], target="vec", k=1).hits[0].id
        t0 = time.perf_counter()
        ix.delete([top])
        del_ms = (time.perf_counter() - t0) * 1e3
        gone = top not in [h.id for h in ix.search(queries[0], target="vec", k=10).hits]
        reopened = len(Index.open(Path(tmp) / "ix")) == n + n_add - 1
    adds = {
        "initial_items": n,
        "initial_s": initial,
        "added": n_add,
        "add_s": add_s,
        "add_items_per_s": n_add / add_s,
        "added_item_found": found_added,
        "delete_ms": del_ms,
        "deleted_gone_next_query": gone,
        "reopen_count_ok": reopened,
    }

    print(f"\n{'method':<62} {'p50 ms':>8} {'GB/s':>6} {'of bw':>6} {'R@10':>6}")
    for r in rows:
        gb = f"{r['gb_s']:.1f}" if "gb_s" in r else ""
        frac = f"{r['of_bandwidth']:.0%}" if "of_bandwidth" in r else ""
        print(f"{r['method']:<62} {r['ms_p50']:>8.2f} {gb:>6} {frac:>6} {r['recall@10']:>6.3f}")
    print(
        f"\nadds: {n:,} items indexed in {initial:.1f}s; +{n_add:,} items in {add_s:.1f}s "
        f"({n_add / add_s:,.0f}/s, no rebuild); added item found: {found_added}; delete {del_ms:.1f} ms, "
        f"gone from next query: {gone}; reopen count ok: {reopened}"
    )
    print(
        "note: single-query latencies are medians over 100 queries on a shared machine (+/-30%); "
        "two-stage recall depends on the spectrum"
    )
    path = save(
        "search",
        {
            "n": n,
            "queries": nq,
            "data": "synthetic clusters, var ~ 1/i, L2-normalised",
            "bandwidth_gb_s": bw,
            "bytes_per_scan": scanned,
            "rows": rows,
            "adds": adds,
        },
    )
    print(f"wrote {path}")


def _timeit(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
