"""In-memory search over an index: exact scans, HNSW on a Matryoshka prefix with a full-width re-rank,
metadata filters, adaptive top-k, and :class:`Index`, the public face of ``omnibind.index``.

The LanceDB table is the system of record; what is searched is a cache of its vectors in RAM, one
:class:`VectorSet` per modality, updated in place on add / update / delete (a deleted row is a tombstone
until :meth:`Index.compact`). Exact search is one pass over float32 rows (``np.einsum``: numpy's own SIMD
loop, about twice as fast as OpenBLAS's single-vector product here) and ``torch.topk``. Above
``exact_threshold`` vectors an hnswlib graph over the unit-normalised ``prefix`` first coordinates gives a
shortlist that is re-ranked at full width, so results are always scored exactly. The graph is built by
the first search that needs it (or :meth:`VectorSet.build_hnsw`), so opening an index to add items never
pays for it; once built, it takes new rows as they come.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from omnibind.index.store import SearchError

MAX_K = 10_000
_SMALL_TOPK = 2048  # below this many scores numpy's argpartition beats torch.topk (measured 100: 11 vs 59 us)


@dataclass
class SearchSettings:
    """How an index is searched (stored in ``index.json``; can be overridden when opening).

    Attributes:
        exact_threshold: a modality with more live vectors than this is served by HNSW + re-rank.
        prefix: width of the HNSW vectors (the Matryoshka prefix); at most D.
        shortlist: HNSW candidates re-ranked at full width (at least ``k``).
        ef_search: HNSW search breadth (at least ``shortlist``).
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW build breadth.
        threads: threads for HNSW builds and batches of queries.
        storage: what the first stage of a local index scans: ``float32`` (the vectors themselves, exact;
            HNSW above ``exact_threshold``), or a quantized copy, ``float16`` (half the bytes) or ``int8``
            (a quarter; one scale per vector), whose best ``rerank`` candidates are re-scored exactly from
            the float32 rows. Chosen when the index is built.
        rerank: candidates of a quantized first stage re-ranked at full precision (at least ``k``).
    """

    exact_threshold: int = 200_000
    prefix: int = 64
    shortlist: int = 100
    ef_search: int = 128
    hnsw_m: int = 16
    ef_construction: int = 64
    threads: int = 2
    storage: str = "float32"
    rerank: int = 200

    def __post_init__(self) -> None:
        if self.storage not in ("float32", "float16", "int8"):
            raise SearchError(f"storage must be one of float32, float16, int8, got {self.storage!r}")
        if isinstance(self.rerank, bool) or not isinstance(self.rerank, int) or self.rerank < 1:
            raise SearchError(f"rerank must be a positive integer, got {self.rerank!r}")


@dataclass
class Hit:
    """One result: the item, its score, the modality that matched and the item's metadata."""

    id: str
    score: float
    modality: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class SearchResult:
    """Ranked hits and why the list ends: ``"k"`` (k reached), ``"min_score"`` (the next score was below
    the threshold), ``"gap"`` (the next score dropped by more than ``max_gap``) or ``"exhausted"`` (no
    more candidates). ``method`` is how the candidates were found: ``"exact"`` (every vector scored),
    ``"hnsw"`` (HNSW on the Matryoshka prefix, re-ranked at full width), ``"int8"`` / ``"float16"`` (a
    quantized scan, re-ranked from the float32 rows) or ``"qdrant-two-stage"`` (Qdrant's prefetch on the
    prefix vector, re-ranked by Qdrant at full width)."""

    hits: list[Hit]
    stopped_because: str
    method: str = "exact"

    def to_json(self, took_ms: float, items: dict[str, Any] | None = None) -> dict[str, Any]:
        """The body ``POST /v1/search`` answers and ``omnibind search --json`` prints:
        ``{"hits": [{"id", "score", "modality", "metadata", "item"}], "stopped_because", "method",
        "took_ms"}``; ``items`` maps hit ids to their ``item`` (the server's ``include_items``)."""
        hits = [
            {
                "id": h.id,
                "score": h.score,
                "modality": h.modality,
                "metadata": h.metadata,
                "item": None if items is None else items[h.id],
            }
            for h in self.hits
        ]
        return {
            "hits": hits,
            "stopped_because": self.stopped_because,
            "method": self.method,
            "took_ms": took_ms,
        }


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest of ``scores`` ``[n]``, best first (``-inf`` rows dropped)."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    if scores.shape[0] <= _SMALL_TOPK:  # a re-rank shortlist: numpy's call overhead is 5x lower here
        part = np.argpartition(-scores, k - 1)[:k]
        idx = part[np.argsort(-scores[part], kind="stable")]
        values = scores[idx]
        keep = np.isfinite(values)
        return idx[keep].astype(np.int64), values[keep]
    values_t, idx_t = torch.topk(torch.from_numpy(scores), k)  # ~10x faster than argpartition on 1M
    keep_t = torch.isfinite(values_t)
    return idx_t[keep_t].numpy(), values_t[keep_t].numpy()


def adaptive_cut(
    scores: Sequence[float], k: int, min_score: float | None, max_gap: float | None
) -> tuple[int, str]:
    """How many of the (descending) ``scores`` to keep, and why the list stops there."""
    for i, s in enumerate(scores):
        if min_score is not None and s < min_score:
            return i, "min_score"
        if max_gap is not None and i > 0 and scores[i - 1] - s > max_gap:
            return i, "gap"
    return len(scores), "k" if len(scores) >= k else "exhausted"


class VectorSet:
    """The embeddings of one modality: rows, each the embedding of one item.

    The rows live either in a growing float32 buffer in RAM (:meth:`add`) or in arrays memory-mapped
    from an index's vector log (:meth:`extend`), optionally with a quantized copy (``codes``, ``int8``
    with per-row ``scales`` or ``float16``) that the first stage scans instead of the float32 rows.

    Args:
        dim: width D.
        settings: search settings (threshold, prefix, HNSW parameters, re-rank depth).
    """

    def __init__(self, dim: int, settings: SearchSettings) -> None:
        self.dim = dim
        self.settings = settings
        self.vectors: np.ndarray = np.zeros((0, dim), np.float32)  # [capacity, D]
        self.items = np.zeros(0, np.int64)  # [capacity] item position of each row
        self.alive = np.zeros(0, bool)  # [capacity]
        self.codes: np.ndarray | None = None  # [n, D] int8 or float16: the quantized first stage
        self.scales: np.ndarray | None = None  # [n] float32 (int8 codes)
        self.n = 0
        self.dead = 0
        self.hnsw: Any = None
        self._building = threading.Lock()  # concurrent first searches build the graph once

    @property
    def live(self) -> int:
        return self.n - self.dead

    def _grow(self, extra: int) -> None:
        need = self.n + extra
        if need <= self.vectors.shape[0]:
            return
        cap = max(need, int(self.vectors.shape[0] * 1.25) + 1024)
        for name in ("vectors", "items", "alive"):
            old = getattr(self, name)
            new = np.zeros((cap, *old.shape[1:]), old.dtype)
            new[: self.n] = old[: self.n]
            setattr(self, name, new)

    def add(self, items: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        """Append rows in RAM; returns their row numbers ``[n]``. The HNSW graph, if built, gets them too."""
        count = len(items)
        self._grow(count)
        rows = np.arange(self.n, self.n + count)
        self.vectors[rows] = vectors
        self.items[rows] = items
        self.alive[rows] = True
        self.n += count
        if self.hnsw is not None:
            self._hnsw_add(rows)
        return rows

    def extend(
        self,
        vectors: np.ndarray,
        items: np.ndarray,
        codes: np.ndarray | None = None,
        scales: np.ndarray | None = None,
    ) -> None:
        """Point at longer arrays whose first ``n`` rows are the current ones (a vector log that grew);
        the new rows are live. The HNSW graph, if built, gets them too."""
        old = self.n
        alive = np.ones(len(items), bool)
        alive[:old] = self.alive[:old]
        self.vectors, self.items, self.codes, self.scales = vectors, items, codes, scales
        self.alive = alive
        self.n = len(items)
        if self.hnsw is not None and self.n > old:
            self._hnsw_add(np.arange(old, self.n))

    @property
    def scans_exactly(self) -> bool:
        """Whether an unfiltered search scores every row with its float32 vector (no graph, no quantized
        first stage): then :meth:`search_many` ranks as :meth:`search` does, many queries at once."""
        return self.codes is None and self.hnsw is None and not self.wants_hnsw

    @property
    def wants_hnsw(self) -> bool:
        """Whether searches should go through the graph (more live rows than ``exact_threshold``, and no
        quantized first stage, which replaces the graph)."""
        return self.codes is None and self.live > self.settings.exact_threshold

    def remove(self, rows: np.ndarray) -> None:
        """Tombstone rows (still in memory, never returned)."""
        rows = rows[self.alive[rows]]
        self.alive[rows] = False
        self.dead += len(rows)
        if self.hnsw is not None:
            for r in rows.tolist():
                self.hnsw.mark_deleted(int(r))

    def _prefix(self, x: np.ndarray) -> np.ndarray:
        p = min(self.settings.prefix, self.dim)
        cut = np.ascontiguousarray(x[..., :p], dtype=np.float32)
        norm = np.linalg.norm(cut, axis=-1, keepdims=True)
        return cut / np.maximum(norm, 1e-12)

    def build_hnsw(self) -> None:
        """(Re)build the HNSW graph over the live rows' prefixes."""
        with self._building:
            self._build_hnsw()

    def _build_hnsw(self) -> None:
        import hnswlib

        s = self.settings
        graph = hnswlib.Index(space="ip", dim=min(s.prefix, self.dim))
        graph.init_index(
            max_elements=max(self.vectors.shape[0], 1024), M=s.hnsw_m, ef_construction=s.ef_construction
        )
        graph.set_num_threads(s.threads)
        self._graph_add(graph, np.flatnonzero(self.alive[: self.n]))
        self.hnsw = graph  # published only when whole: a concurrent search never sees half a graph

    def _hnsw_add(self, rows: np.ndarray) -> None:
        self._graph_add(self.hnsw, rows)

    def _graph_add(self, graph: Any, rows: np.ndarray) -> None:
        if len(rows) == 0:
            return
        needed = int(rows.max()) + 1
        if needed > graph.get_max_elements():
            graph.resize_index(max(needed, int(graph.get_max_elements() * 1.25)))
        for start in range(0, len(rows), 100_000):
            part = rows[start : start + 100_000]
            graph.add_items(self._prefix(self.vectors[part]), part)

    def search(
        self, query: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """Top-``k`` rows for one query ``[D]``: ``(items [k'], scores [k'], method)``, best first.

        ``allowed`` is ``bool[n_items]`` (None: all items); only rows of allowed items are ranked.
        """
        n = self.n
        if n == 0 or self.live == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), "exact"
        if self.hnsw is None and self.wants_hnsw:
            with self._building:
                if self.hnsw is None:  # another search may have built it while this one waited
                    self._build_hnsw()
        mask = None
        if allowed is not None:
            mask = self.alive[:n] & allowed[self.items[:n]]
            count = int(mask.sum())
            if count <= self.settings.exact_threshold or (self.hnsw is None and self.codes is None):
                rows = np.flatnonzero(mask)
                scores = np.einsum("ij,j->i", self.vectors[rows], query)  # [count]
                idx, vals = topk(scores, k)
                return self.items[rows[idx]], vals, "exact"
        if self.hnsw is not None:
            return self._two_stage(query, k, mask)
        if self.codes is not None:
            return self._quantized(query, k, mask)
        scores = np.einsum("ij,j->i", self.vectors[:n], query)  # [n]; one pass over n*D*4 bytes
        if self.dead:
            scores[~self.alive[:n]] = -np.inf
        idx, vals = topk(scores, k)
        return self.items[idx], vals, "exact"

    def _two_stage(
        self, query: np.ndarray, k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, str]:
        s = self.settings
        want = min(max(s.shortlist, k), self.live)
        self.hnsw.set_ef(max(s.ef_search, want))
        flt = None if mask is None else (lambda label: bool(mask[label]))
        labels, _ = self.hnsw.knn_query(self._prefix(query)[None], k=want, filter=flt)
        rows = labels[0].astype(np.int64)  # [want]
        scores = self.vectors[rows] @ query  # full-width re-rank
        idx, vals = topk(np.ascontiguousarray(scores, dtype=np.float32), k)
        return self.items[rows[idx]], vals, "hnsw"

    def _quantized(
        self, query: np.ndarray, k: int, mask: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, str]:
        """Scan the quantized codes, keep the best ``rerank`` rows, re-score them from the float32 rows."""
        assert self.codes is not None
        n = self.n
        # blocks whose float32 copy is ~8 MB stay in cache: 1M x 256 int8 scans in 0.05 s, 0.33 s with
        # 131,072-row blocks (2-core EPYC)
        block = max(1024, 2**21 // self.dim)
        q = np.ascontiguousarray(query, dtype=np.float32)
        approx = np.empty(n, np.float32)
        q_t = torch.from_numpy(q)
        for start in range(0, n, block):  # one block of codes as float32 at a time: bounded memory
            stop = min(start + block, n)
            codes = np.asarray(self.codes[start:stop])
            if codes.dtype == np.float16:  # torch converts half precision about twice as fast as numpy
                approx[start:stop] = (torch.from_numpy(codes.copy()).float() @ q_t).numpy()
            else:  # int8: numpy's conversion is the faster one here
                approx[start:stop] = codes.astype(np.float32) @ q
        if self.scales is not None:
            approx *= self.scales[:n]
        keep = self.alive[:n] if mask is None else mask
        approx[~keep] = -np.inf
        rows, _ = topk(approx, min(max(self.settings.rerank, k), n))
        rows = np.sort(rows)  # file order: fewer, longer reads of the float32 rows
        scores = np.ascontiguousarray(np.asarray(self.vectors[rows]) @ q, dtype=np.float32)
        idx, vals = topk(scores, k)
        return self.items[rows[idx]], vals, self.settings.storage

    def search_many(self, queries: np.ndarray, k: int, block: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` for a batch ``[Q, D]`` by blocked matrix products (torch threads): ``[Q, k]`` twice."""
        q = np.ascontiguousarray(queries, dtype=np.float32)  # [Q, D]
        best_v = torch.full((q.shape[0], 0), -math.inf)
        best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
        for start in range(0, self.n, block):
            stop = min(start + block, self.n)
            # numpy's product reads a read-only memory map in place (torch would need a copy of the block)
            scores = torch.from_numpy(q @ np.asarray(self.vectors[start:stop], np.float32).T)  # [Q, block]
            if self.dead:
                scores[:, torch.from_numpy(~self.alive[start:stop])] = -math.inf
            v, i = torch.topk(scores, min(k, stop - start), dim=1)
            best_v, pos = torch.topk(torch.cat([best_v, v], 1), min(k, best_v.shape[1] + v.shape[1]), dim=1)
            best_i = torch.gather(torch.cat([best_i, i + start], 1), 1, pos)
        return self.items[best_i.numpy()], best_v.numpy()


_OPS = {"=": "eq", "==": "eq", "!=": "ne", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}


def parse_where(expressions: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value``, ``key!=v``, ``key>=3``, ``key<2.5``, ``key=a,b,c`` (one of) into a filter dict.

    Values are read as YAML scalars (``3`` is a number, ``red`` a string).

    Example:
        >>> parse_where(["colour=red,blue", "size>=2"])
        {'colour': {'in': ['red', 'blue']}, 'size': {'gte': 2}}
    """
    import yaml

    out: dict[str, Any] = {}
    for expr in expressions:
        m = re.fullmatch(r"\s*([^=!<>\s]+)\s*(==|!=|>=|<=|=|>|<)\s*(.*?)\s*", expr)
        if not m:
            raise SearchError(f"cannot read the filter {expr!r}; write key=value, key>=number or key=a,b")
        key, op, raw = m.groups()
        parts = [yaml.safe_load(p) for p in raw.split(",")] if "," in raw else None
        cond = out.setdefault(key, {})
        if parts is not None and _OPS[op] == "eq":
            cond["in"] = parts
        else:
            cond[_OPS[op]] = yaml.safe_load(raw)
    return out


def _matches(value: Any, cond: Any) -> bool:
    if not isinstance(cond, Mapping):
        if isinstance(cond, (list, tuple, set)):
            return value in cond
        return bool(value == cond)
    for op, target in cond.items():
        if op == "eq" and not value == target:
            return False
        if op == "ne" and value == target:
            return False
        if op == "in" and value not in target:
            return False
        if op in ("gt", "gte", "lt", "lte"):
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                return False
            if not {
                "gt": value > target,
                "gte": value >= target,
                "lt": value < target,
                "lte": value <= target,
            }[op]:
                return False
    return True


def check_where(where: Mapping[str, Any]) -> None:
    """Raise ``SearchError`` for an operator that is not ``eq, ne, in, gt, gte, lt, lte``."""
    for key, cond in where.items():
        if isinstance(cond, Mapping):
            for op, target in cond.items():
                if op not in ("eq", "ne", "in", "gt", "gte", "lt", "lte"):
                    raise SearchError(
                        f"filter on '{key}': unknown operator '{op}'; use eq, ne, in, gt, gte, lt, lte"
                    )
                if op in ("gt", "gte", "lt", "lte") and (
                    isinstance(target, bool) or not isinstance(target, (int, float))
                ):
                    raise SearchError(f"filter on '{key}': '{op}' needs a number, got {target!r}")
                if op == "in" and not isinstance(target, (list, tuple, set)):
                    raise SearchError(f"filter on '{key}': 'in' needs a list, got {target!r}")


def filter_mask(metadata: Sequence[dict[str, Any]], where: Mapping[str, Any]) -> np.ndarray:
    """``bool[n]``: which items' metadata satisfy every condition of ``where``.

    A condition is a value (equality), a list (one of) or a dict of operators
    (``eq, ne, in, gt, gte, lt, lte``). Items without the key do not match.
    """
    check_where(where)
    mask = np.ones(len(metadata), bool)
    for key, cond in where.items():
        mask &= np.fromiter(
            (key in md and _matches(md[key], cond) for md in metadata), bool, count=len(metadata)
        )
    return mask
