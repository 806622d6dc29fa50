"""The HTTP service under load: concurrent clients sending vector searches to ``omnibind serve`` on loopback.

    python benchmarks/serve_load.py            # 100k items, 32 clients, 5,000 requests
    python benchmarks/serve_load.py --quick    # 20k items, 16 clients, 1,000 requests

The index holds synthetic unit vectors (width 256, a decaying spectrum around 2,000 centres) added with
``Index.add_embeddings`` under a one-modality ``embedding`` model, so no encoder runs: the numbers are the
service (HTTP, JSON, routing, locking) plus exact search. The server is the real CLI (``omnibind serve``)
in its own process on 127.0.0.1; the clients are ``httpx`` asyncio tasks in this process. Also measured:
the library called directly on the same queries (one at a time, and from as many threads as there are
clients), which gives the server's overhead as a ratio. Every request count and the total time are
bounded (``--max-seconds``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

HOST = "127.0.0.1"  # loopback only, by design
DIM = 256


def synthetic(n: int, seed: int) -> np.ndarray:
    """``float32[n, DIM]`` unit vectors: clusters with a decaying per-coordinate spectrum."""
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.arange(1, DIM + 1) ** 0.5).astype(np.float32)
    centres = np.random.default_rng(0).standard_normal((2000, DIM), dtype=np.float32) * scale
    x = centres[rng.integers(0, 2000, n)] + 0.5 * rng.standard_normal((n, DIM), dtype=np.float32) * scale
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build_index(path: Path, n: int) -> None:
    from omnibind.config import config_from_dict
    from omnibind.index import Index
    from omnibind.model import OmniModel

    model = OmniModel(
        config_from_dict({"modalities": {"vec": {"kind": "embedding", "dim": DIM}}, "model": {"dim": DIM}})
    )
    index = Index.create(path, model)
    for start in range(0, n, 50_000):
        stop = min(start + 50_000, n)
        index.add_embeddings(
            [f"v{i}" for i in range(start, stop)], {"vec": synthetic(stop - start, seed=start + 1)}
        )


def start_server(index: Path, port: int, workers: int, deadline_s: float = 120) -> subprocess.Popen:
    import httpx

    cmd = [
        sys.executable,
        "-m",
        "omnibind.cli.main",
        "serve",
        str(index),
        "--host",
        HOST,
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"http://{HOST}:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not answer /healthz in time")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def load(url: str, queries: np.ndarray, requests: int, clients: int, k: int, max_s: float) -> dict:
    """``clients`` tasks share ``requests`` searches; latency per request, errors, wall time."""
    import httpx

    bodies = [{"vectors": {"": q.tolist()}, "target": "vec", "k": k} for q in queries]
    latencies: list[float] = []
    server_ms: list[float] = []  # the search itself, timed inside the server ("took_ms")
    errors: list[str] = []
    next_request = iter(range(requests))
    stop_at = time.monotonic() + max_s

    async def client(http: httpx.AsyncClient) -> None:
        for i in next_request:
            if time.monotonic() > stop_at:
                errors.append("time budget exceeded")
                return
            t0 = time.perf_counter()
            try:
                r = await http.post(url, json=bodies[i % len(bodies)])
                if r.status_code != 200 or len(r.json()["hits"]) != k:
                    errors.append(f"{r.status_code} {r.text[:100]}")
                else:
                    server_ms.append(r.json()["took_ms"])
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        wall = time.perf_counter() - t0
    ms = np.array(latencies) * 1e3
    return {
        "requests": len(latencies),
        "clients": clients,
        "errors": len(errors),
        "first_errors": errors[:3],
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "throughput_rps": len(latencies) / wall,
        "wall_s": wall,
        "search_in_server_p50_ms": float(np.percentile(server_ms, 50)) if server_ms else None,
        "search_in_server_p99_ms": float(np.percentile(server_ms, 99)) if server_ms else None,
    }


def library(index_path: Path, queries: np.ndarray, requests: int, threads: int, k: int) -> dict:
    """The same searches through ``Index.search`` in this process: sequential latency and threaded rate."""
    from omnibind.index import Index

    index = Index.open(index_path)
    index.search(queries[0], target="vec", k=k)  # warm up
    seq = []
    for q in queries[: min(300, len(queries))]:
        t0 = time.perf_counter()
        index.search(q, target="vec", k=k)
        seq.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: index.search(queries[i % len(queries)], target="vec", k=k), range(requests)))
    wall = time.perf_counter() - t0
    return {"p50_ms": float(np.median(seq) * 1e3), "throughput_rps": requests / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k items, 16 clients, 1,000 requests")
    parser.add_argument("--items", type=int)
    parser.add_argument("--clients", type=int)
    parser.add_argument("--requests", type=int)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--workers", type=int, default=0, help="server --workers (0: one per core)")
    parser.add_argument("--max-seconds", type=float, default=300, help="time budget of the load phase")
    args = parser.parse_args()
    items = args.items or (20_000 if args.quick else 100_000)
    clients = args.clients or (16 if args.quick else 32)
    requests = args.requests or (1_000 if args.quick else 5_000)
    queries = synthetic(1000, seed=10**6)

    with tempfile.TemporaryDirectory() as tmp:
        index_path = Path(tmp) / "index"
        t0 = time.perf_counter()
        build_index(index_path, items)
        build_s = time.perf_counter() - t0
        port = free_port()
        server = start_server(index_path, port, args.workers)
        try:
            url = f"http://{HOST}:{port}/v1/search"
            single = asyncio.run(load(url, queries, 300, 1, args.k, args.max_seconds))
            loaded = asyncio.run(load(url, queries, requests, clients, args.k, args.max_seconds))
        finally:
            server.terminate()
            server.wait(timeout=30)
        direct = library(index_path, queries, min(requests, 2000), clients, args.k)

    rows = [
        ("library, 1 caller", direct["p50_ms"], None, None, None),
        ("server, 1 client", single["p50_ms"], single["p99_ms"], single["throughput_rps"], single["errors"]),
        (f"library, {clients} threads", None, None, direct["throughput_rps"], None),
        (
            f"server, {clients} clients",
            loaded["p50_ms"],
            loaded["p99_ms"],
            loaded["throughput_rps"],
            loaded["errors"],
        ),
    ]
    latency_ratio = single["p50_ms"] / direct["p50_ms"]
    throughput_ratio = direct["throughput_rps"] / loaded["throughput_rps"]
    print(
        f"\n{items:,} items x {DIM} (synthetic), k={args.k}, {requests:,} requests, loopback, "
        f"{os.cpu_count()} cores"
    )
    print(f"{'':24} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>7}")
    for name, p50, p99, rps, err in rows:
        cells = [f"{v:8.2f}" if v is not None else f"{'':8}" for v in (p50, p99, rps)]
        print(f"{name:24} {' '.join(cells)} {'' if err is None else err:>7}")
    print(
        f"inside the server, the search itself (took_ms): p50 {loaded['search_in_server_p50_ms']:.2f} ms, "
        f"p99 {loaded['search_in_server_p99_ms']:.2f} ms under load; the rest is queueing, HTTP and JSON"
    )
    print(f"server overhead: latency x{latency_ratio:.2f} (1 client vs library p50), "
          f"throughput x{throughput_ratio:.2f} (library threads vs server clients)")  # fmt: skip
    path = save(
        "serve_load",
        {
            "items": items,
            "dim": DIM,
            "data": "synthetic unit vectors, decaying spectrum, 2,000 clusters",
            "k": args.k,
            "server_workers": args.workers or os.cpu_count(),
            "build_s": build_s,
            "single_client": single,
            "load": loaded,
            "library": direct,
            "overhead_latency_ratio": latency_ratio,
            "overhead_throughput_ratio": throughput_ratio,
        },
    )
    print(f"wrote {path}")
    if loaded["errors"] or single["errors"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
