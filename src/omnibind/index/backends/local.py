"""The default backend: a local directory, searched in this process from memory-mapped vectors.

The LanceDB table (``index/store.py``) is the system of record: ids, metadata, raw values, media bytes,
vectors. Searches read the vector log beside it (``index/vectors.py``): ids, metadata and per modality the
vectors (and a quantized copy), memory-mapped, append-only, with tombstones for deleted or replaced items.
Only small per-item arrays (liveness, a hash of each id) and, once a filter needs them, the parsed metadata
live in this process's heap, so several processes share one copy of the vectors in the page cache.

One writer at a time (a file lock, across processes); each write appends past the committed end, commits
the table, then publishes the log's new ``state.json``. A process sees other processes' commits at its next
search or write (one ``stat`` per search tells it something changed), always a whole committed version.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnibind.errors import DataError
from omnibind.index import vectors as vlog
from omnibind.index.backends.base import Ranked
from omnibind.index.search import SearchSettings, VectorSet, filter_mask
from omnibind.index.store import ItemStore, rows_table

_REHASH = 100_000  # ids appended since the last hash table above this (and a tenth of all): rebuild it


class LocalBackend:
    """An index directory, searched from its memory-mapped vector log.

    Args:
        store: the directory's LanceDB table and ``index.json``.
        settings: search settings (exact threshold, Matryoshka prefix, HNSW parameters, storage).
    """

    def __init__(self, store: ItemStore, settings: SearchSettings) -> None:
        self.store = store
        self.settings = settings
        self.path: Path = store.path
        self.location = str(store.path)
        self.meta = store.meta
        self.modalities: list[str] = list(store.modalities)
        self.dim = store.dim
        self._refreshing = threading.Lock()
        with vlog.writer_lock(self.path):
            self._attach(self._current_log(), full=True)

    @classmethod
    def create(cls, path: str | Path, meta: dict[str, Any], settings: SearchSettings) -> LocalBackend:
        """A new, empty index directory (refused where one exists)."""
        return cls(ItemStore.create(path, meta), settings)

    @classmethod
    def open(cls, path: str | Path, settings: SearchSettings | None = None) -> LocalBackend:
        """An existing index directory; ``settings`` default to those in its ``index.json`` (the storage
        is the log's, chosen at build)."""
        store = ItemStore.open(path)
        return cls(store, settings or SearchSettings(**store.meta.get("settings", {})))

    # ---- the log -----------------------------------------------------------------------------------
    def _current_log(self) -> vlog.VectorLog:
        """The published log, rebuilt from the table where it is missing or behind it (hold the lock)."""
        root = vlog.current(self.path)
        self.store.table.checkout_latest()
        if root is not None:
            log = vlog.VectorLog(root, self.modalities, self.dim)
            if log.state["lance_version"] == self.store.version():
                return log
        return self._rebuild(log.storage if root is not None else self.settings.storage)

    def _rebuild(self, storage: str) -> vlog.VectorLog:
        """A new log holding the table's live rows, published (the old one is removed)."""
        from tqdm.auto import tqdm

        self.store.table.checkout_latest()
        version = self.store.version()
        root = vlog.new_root(self.path)
        log = vlog.VectorLog.create(root, self.modalities, self.dim, storage, version)
        columns = ["id", "metadata", *(f"{m}__vector" for m in self.modalities)]
        total = self.store.table.count_rows()
        reader = self.store.table.search().select(columns).limit(None).to_batches(65_536)
        import pyarrow as pa

        with tqdm(total=total, desc="mapping vectors", unit="item", disable=total < 200_000) as bar:
            for batch in reader:
                table = pa.Table.from_batches([batch])
                vectors, present = arrow_vectors(table, self.modalities, self.dim)
                metadata = [json.loads(m or "{}") for m in table.column("metadata").to_pylist()]
                state = log.append(table.column("id").to_pylist(), metadata, vectors, present, [], Counter())
                log.commit(state, version)
                bar.update(table.num_rows)
        vlog.publish(self.path, root)
        return log

    def _stamp(self) -> tuple[Any, ...]:
        try:
            a, b = os.stat(self.path / vlog.POINTER), os.stat(self._log.root / vlog.STATE)
        except FileNotFoundError:
            return ()
        return a.st_mtime_ns, a.st_ino, b.st_mtime_ns, b.st_ino

    def _attach(self, log: vlog.VectorLog, full: bool) -> None:
        """Take ``log``'s committed state into memory: everything (``full``) or what was appended."""
        st = log.state
        n = int(st["items"])
        old = 0 if full else self._n
        self._log = log
        self._ids_blob, self._ids_off = log.ids(st)
        self._meta_blob, self._meta_off = log.metadata(st)
        alive = np.ones(n, bool)
        if not full:
            alive[:old] = self._alive[:old]
        alive[log.dead(st)] = False
        self._alive = alive
        if full:
            self._sets = {m: VectorSet(self.dim, self.settings) for m in self.modalities}
            self._parsed: list[dict[str, Any]] | None = None
            self._hash_index(n)
        else:
            self._recent_ids(old, n)
            if self._parsed is not None:
                self._parsed.extend(self._metadata_at(p) for p in range(old, n))
        for m, s in self._sets.items():
            rows = log.rows(m, st)
            s.extend(rows["vectors"], rows["items"], rows["codes"], rows["scales"])
            gone = np.flatnonzero(s.alive[: s.n] & ~alive[s.items[: s.n]])
            if len(gone):
                s.remove(gone)
        self._n = n
        self._keys: Counter[str] = Counter(st["keys"])
        self._seen = self._stamp()

    def _look(self) -> None:
        """Refresh if another process committed since (one ``stat`` of two small files)."""
        if self._stamp() != self._seen:
            self._refresh()

    def _refresh(self) -> None:
        """See the latest committed version (another process may have written)."""
        with self._refreshing:
            if self._stamp() == self._seen:
                return
            root = vlog.current(self.path)
            if root is None:
                return
            if root != self._log.root:
                self._attach(vlog.VectorLog(root, self.modalities, self.dim), full=True)
            else:
                self._log.state = self._log.read_state()
                self._attach(self._log, full=False)

    # ---- ids -----------------------------------------------------------------------------------------
    def _id_at(self, p: int) -> bytes:
        return bytes(self._ids_blob[self._ids_off[p] : self._ids_off[p + 1]])

    def _hash_index(self, n: int) -> None:
        """Sorted hashes of every id (two int64 per item instead of a dict of strings)."""
        hashes = id_hashes(self._ids_blob, self._ids_off[: n + 1])
        self._hash_order = np.argsort(hashes, kind="stable")
        self._hash_sorted = hashes[self._hash_order]
        self._recent: dict[bytes, list[int]] = {}

    def _recent_ids(self, start: int, stop: int) -> None:
        if len(self._recent) + stop - start > max(_REHASH, stop // 10):
            self._hash_index(stop)
            return
        for p in range(start, stop):
            self._recent.setdefault(self._id_at(p), []).append(p)

    def _find(self, item_id: str) -> int | None:
        """The position of the live item ``item_id``, or None."""
        return self._find_many([item_id])[0]

    def _find_many(self, item_ids: Sequence[str]) -> list[int | None]:
        """The positions of live items (None where not live): one vectorised lookup for the batch."""
        keys = [str(i).encode("utf-8") for i in item_ids]
        hashes = np.array([id_hash(k) for k in keys], np.uint64)  # uint64 on both sides: exact compares
        lo = np.searchsorted(self._hash_sorted, hashes, "left")
        hi = np.searchsorted(self._hash_sorted, hashes, "right")
        out: list[int | None] = []
        for key, a, b in zip(keys, lo.tolist(), hi.tolist(), strict=True):
            found = None
            for p in [*self._recent.get(key, []), *self._hash_order[a:b].tolist()]:
                if self._alive[p] and self._id_at(p) == key:
                    found = int(p)
                    break
            out.append(found)
        return out

    def _metadata_at(self, p: int) -> dict[str, Any]:
        raw = bytes(self._meta_blob[self._meta_off[p] : self._meta_off[p + 1]])
        return json.loads(raw) if raw else {}

    def _all_metadata(self) -> list[dict[str, Any]]:
        """Every item's metadata, parsed once (the first filtered search pays for it)."""
        if self._parsed is None:
            self._parsed = [self._metadata_at(p) for p in range(self._n)]
        return self._parsed

    # ---- reads -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        self._look()
        return int(self._alive.sum())

    def has(self, item_id: str) -> bool:
        self._look()
        return self._find(item_id) is not None

    def live(self, ids: Sequence[str]) -> set[str]:
        self._look()
        return {str(i) for i, p in zip(ids, self._find_many(ids), strict=True) if p is not None}

    def ids(self) -> list[str]:
        self._look()
        return [self._id_at(p).decode("utf-8") for p in np.flatnonzero(self._alive).tolist()]

    def counts(self) -> dict[str, int]:
        self._look()
        return {m: s.live for m, s in self._sets.items()}

    def metadata_keys(self) -> list[str]:
        self._look()
        return sorted(key for key, count in self._keys.items() if count > 0)

    def item(self, item_id: str) -> dict[str, Any] | None:
        self._look()
        row = self.store.row(item_id) if self.has(item_id) else None
        if row is None:
            return None
        mods = {
            m: {
                "value": row.get(f"{m}__value"),
                "path": row.get(f"{m}__path"),
                "has_bytes": row.get(f"{m}__bytes") is not None,
            }
            for m in self.modalities
            if row.get(f"{m}__vector") is not None
        }
        return {"metadata": json.loads(row["metadata"] or "{}"), "modalities": mods}

    def media(self, item_id: str, modality: str) -> bytes | None:
        row = self.store.row(item_id) if self.has(item_id) else None
        return None if row is None else row.get(f"{modality}__bytes")

    def embedding(self, item_id: str, modality: str) -> np.ndarray | None:
        self._look()
        pos = self._find(item_id)
        s = self._sets[modality]
        rows = np.flatnonzero((s.items[: s.n] == pos) & s.alive[: s.n])
        return np.array(s.vectors[rows[0]], np.float32) if len(rows) else None

    # ---- writes ----------------------------------------------------------------------------------
    def write(
        self,
        ids: Sequence[str],
        metadata: Sequence[dict[str, Any]],
        vectors: Mapping[str, np.ndarray],
        present: np.ndarray,
        raw: dict[str, list[dict[str, Any] | None]] | None,
        replace: bool,
    ) -> None:
        rows = rows_table(self.modalities, self.dim, ids, metadata, vectors, present, raw)
        with vlog.writer_lock(self.path):
            self._refresh()  # another process may have written since this one last looked
            found = self._find_many(ids)
            if not replace and any(p is not None for p in found):
                taken = next(i for i, p in zip(ids, found, strict=True) if p is not None)
                raise DataError(
                    "already in the index (written by another process meanwhile)", record_id=taken
                )
            dead = [p for p in found if p is not None]
            state = self._log.append(ids, metadata, vectors, present, dead, self._keys_of(dead))
            if replace:
                self.store.upsert(rows)
            else:
                self.store.append(rows)
            self._log.commit(state, self.store.version())
            self._attach(self._log, full=False)

    def delete(self, ids: Sequence[str]) -> None:
        with vlog.writer_lock(self.path):
            self._refresh()
            dead = [p for p in self._find_many(ids) if p is not None]
            empty = {m: np.zeros((0, self.dim), np.float32) for m in self.modalities}
            state = self._log.append(
                [], [], empty, np.zeros((0, len(self.modalities)), bool), dead, self._keys_of(dead)
            )
            self.store.delete(ids)
            self._log.commit(state, self.store.version())
            self._attach(self._log, full=False)

    def _keys_of(self, positions: Sequence[int]) -> Counter[str]:
        return Counter(key for p in positions for key in self._metadata_at(p))

    def compact(self) -> None:
        """Rewrite the table without deleted rows and old versions, and the log without tombstones."""
        with vlog.writer_lock(self.path):
            self.store.compact()
            self._attach(self._rebuild(self._log.storage), full=True)

    def prepare(self) -> None:
        """Build the HNSW graph of every modality over ``exact_threshold`` live vectors (float32 storage)."""
        for vector_set in self._sets.values():
            if vector_set.hnsw is None and vector_set.wants_hnsw:
                vector_set.build_hnsw()

    def close(self) -> None:
        return None

    # ---- search ----------------------------------------------------------------------------------
    def search(
        self,
        vector: np.ndarray,
        targets: Sequence[str],
        k: int,
        where: Mapping[str, Any] | None,
        exclude: str | None,
    ) -> tuple[dict[str, Ranked], str]:
        self._look()
        allowed = filter_mask(self._all_metadata(), where) if where else None
        if exclude is not None:
            allowed = np.ones(self._n, bool) if allowed is None else allowed
            p = self._find(exclude)
            if p is not None:
                allowed[p] = False
        out: dict[str, Ranked] = {}
        method = "exact"
        for m in targets:
            items, scores, used = self._sets[m].search(vector, k, allowed)
            method = used if used != "exact" else method
            out[m] = [
                (self._id_at(p).decode("utf-8"), s, self._metadata_at(p))
                for p, s in zip(items.tolist(), scores.tolist(), strict=True)
            ]
        return out, method

    def search_batch(self, vectors: np.ndarray, target: str, k: int) -> list[Ranked] | None:
        self._look()
        s = self._sets[target]
        if not s.scans_exactly:
            return None
        if s.n == 0 or s.live == 0:
            return [[] for _ in range(len(vectors))]
        items, scores = s.search_many(vectors, k)
        return [
            [
                (self._id_at(p).decode("utf-8"), float(v), self._metadata_at(p))
                for p, v in zip(row_i, row_s, strict=True)
                if np.isfinite(v)
            ]
            for row_i, row_s in zip(items.tolist(), scores.tolist(), strict=True)
        ]

    def search_many(self, vectors: np.ndarray, target: str, k: int) -> list[list[tuple[str, float]]]:
        self._look()
        items, scores = self._sets[target].search_many(vectors, k)
        return [
            [
                (self._id_at(i).decode("utf-8"), float(s))
                for i, s in zip(row_i, row_s, strict=True)
                if np.isfinite(s)
            ]
            for row_i, row_s in zip(items.tolist(), scores.tolist(), strict=True)
        ]


_HASH_BASE = 1_000_003
_MASK = (1 << 64) - 1


def id_hashes(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``uint64[n]``: :func:`id_hash` of each of the ``n`` ids in ``blob`` (``offsets [n + 1]``), in
    numpy (5M ids in about a second, where a Python loop takes fifteen)."""
    n = len(offsets) - 1
    lengths = np.diff(offsets)
    if n == 0 or int(offsets[-1]) == int(offsets[0]):
        return np.zeros(n, np.uint64)
    start = int(offsets[0])
    data = np.asarray(blob[start : int(offsets[-1])], np.uint64)
    rel = np.arange(len(data), dtype=np.int64) - np.repeat(offsets[:-1] - start, lengths)
    powers = np.ones(int(lengths.max()), np.uint64)
    with np.errstate(over="ignore"):
        for j in range(1, len(powers)):
            powers[j] = powers[j - 1] * np.uint64(_HASH_BASE)
        terms = (data + np.uint64(1)) * powers[rel]
        out = np.zeros(n, np.uint64)
        nonempty = lengths > 0
        out[nonempty] = np.add.reduceat(terms, (offsets[:-1] - start)[nonempty])
    return out


def id_hash(key: bytes) -> int:
    """The hash of one id: ``sum_j (byte_j + 1) * B**j mod 2**64`` (as :func:`id_hashes`)."""
    h, power = 0, 1
    for byte in key:
        h = (h + (byte + 1) * power) & _MASK
        power = (power * _HASH_BASE) & _MASK
    return h


def arrow_vectors(
    table: Any, modalities: Sequence[str], dim: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``({m: float32[N, D]}, present bool[N, M])`` from the vector columns of an Arrow table."""
    n = table.num_rows
    present = np.zeros((n, len(modalities)), bool)
    out = {}
    for j, m in enumerate(modalities):
        col = table.column(f"{m}__vector").combine_chunks()
        present[:, j] = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
        flat = col.values.to_numpy(zero_copy_only=False)[col.offset * dim : (col.offset + n) * dim]
        out[m] = np.ascontiguousarray(flat.reshape(n, dim), dtype=np.float32)
    return out, present
