"""The default backend: a local directory (LanceDB table + ``index.json``) searched in this process.

The LanceDB table (``index/store.py``) is the system of record; what is searched is a cache of its vectors,
one :class:`~omnibind.index.search.VectorSet` per modality, updated in place on write and delete (a deleted
row is a tombstone until :meth:`LocalBackend.compact`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnibind.index.backends.base import Ranked
from omnibind.index.search import SearchSettings, VectorSet, filter_mask
from omnibind.index.store import ItemStore, rows_table


class LocalBackend:
    """An index directory, its vectors held by this process.

    Args:
        store: the directory's LanceDB table and ``index.json``.
        settings: search settings (exact threshold, Matryoshka prefix, HNSW parameters).
    """

    def __init__(self, store: ItemStore, settings: SearchSettings) -> None:
        self.store = store
        self.settings = settings
        self.path: Path = store.path
        self.location = str(store.path)
        self.meta = store.meta
        self.modalities: list[str] = list(store.modalities)
        self.dim = store.dim
        self._load()

    @classmethod
    def create(cls, path: str | Path, meta: dict[str, Any], settings: SearchSettings) -> LocalBackend:
        """A new, empty index directory (refused where one exists)."""
        return cls(ItemStore.create(path, meta), settings)

    @classmethod
    def open(cls, path: str | Path, settings: SearchSettings | None = None) -> LocalBackend:
        """An existing index directory; ``settings`` default to those in its ``index.json``."""
        store = ItemStore.open(path)
        return cls(store, settings or SearchSettings(**store.meta.get("settings", {})))

    def _load(self) -> None:
        """Read ids, metadata and vectors from the table into memory."""
        columns = ["id", "metadata", *(f"{m}__vector" for m in self.modalities)]
        table = self.store.read(columns)
        self._ids: list[str] = table.column("id").to_pylist()
        self._pos: dict[str, int] = {i: p for p, i in enumerate(self._ids)}
        self._metadata: list[dict[str, Any]] = [
            json.loads(s or "{}") for s in table.column("metadata").to_pylist()
        ]
        self._alive = np.ones(len(self._ids), bool)
        # live items per metadata key: a filter on a key no item has is a typo, not an empty result
        self._keys: Counter[str] = Counter(key for md in self._metadata for key in md)
        self._sets = {m: VectorSet(self.dim, self.settings) for m in self.modalities}
        vectors, present = arrow_vectors(table, self.modalities, self.dim)
        self._index_vectors(np.arange(len(self._ids)), vectors, present)

    def _index_vectors(
        self, positions: np.ndarray, vectors: Mapping[str, np.ndarray], present: np.ndarray
    ) -> None:
        for j, m in enumerate(self.modalities):
            rows = np.flatnonzero(present[:, j])
            if len(rows):
                self._sets[m].add(positions[rows], vectors[m][rows])

    # ---- reads -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._alive.sum())

    def has(self, item_id: str) -> bool:
        return item_id in self._pos and bool(self._alive[self._pos[item_id]])

    def ids(self) -> list[str]:
        return [i for p, i in enumerate(self._ids) if self._alive[p]]

    def counts(self) -> dict[str, int]:
        return {m: s.live for m, s in self._sets.items()}

    def metadata_keys(self) -> list[str]:
        return sorted(key for key, count in self._keys.items() if count > 0)

    def item(self, item_id: str) -> dict[str, Any] | None:
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
        s = self._sets[modality]
        rows = np.flatnonzero((s.items[: s.n] == self._pos[item_id]) & s.alive[: s.n])
        return s.vectors[rows[0]].copy() if len(rows) else None

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
        n = len(ids)
        rows = rows_table(self.modalities, self.dim, ids, metadata, vectors, present, raw)
        if replace:
            self.store.upsert(rows)
            self._forget([i for i in ids if i in self._pos])
        else:
            self.store.append(rows)
        start = len(self._ids)
        self._ids.extend(ids)
        self._pos.update({i: start + k for k, i in enumerate(ids)})
        self._metadata.extend(dict(md) for md in metadata)
        self._keys.update(key for md in self._metadata[start:] for key in md)
        self._alive = np.concatenate([self._alive, np.ones(n, bool)])
        self._index_vectors(np.arange(start, start + n), vectors, present)

    def delete(self, ids: Sequence[str]) -> None:
        self.store.delete(ids)
        self._forget(ids)

    def _forget(self, ids: Sequence[str]) -> None:
        positions = np.array([self._pos.pop(i) for i in ids], np.int64)
        self._alive[positions] = False
        self._keys.subtract(key for p in positions.tolist() for key in self._metadata[p])
        for s in self._sets.values():
            rows = np.flatnonzero(np.isin(s.items[: s.n], positions) & s.alive[: s.n])
            s.remove(rows)

    def compact(self) -> None:
        """Rewrite the table without deleted rows and old versions, then reload (drops tombstones)."""
        self.store.compact()
        self._load()

    def prepare(self) -> None:
        """Build the HNSW graph of every modality over ``exact_threshold`` live vectors."""
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
        allowed = filter_mask(self._metadata, where) if where else None
        if exclude is not None:
            allowed = np.ones(len(self._ids), bool) if allowed is None else allowed
            allowed[self._pos[exclude]] = False
        out: dict[str, Ranked] = {}
        method = "exact"
        for m in targets:
            items, scores, used = self._sets[m].search(vector, k, allowed)
            method = "hnsw" if used == "hnsw" else method
            out[m] = [
                (self._ids[p], s, self._metadata[p])
                for p, s in zip(items.tolist(), scores.tolist(), strict=True)
            ]
        return out, method

    def search_many(self, vectors: np.ndarray, target: str, k: int) -> list[list[tuple[str, float]]]:
        items, scores = self._sets[target].search_many(vectors, k)
        return [
            [(self._ids[i], float(s)) for i, s in zip(row_i, row_s, strict=True) if np.isfinite(s)]
            for row_i, row_s in zip(items.tolist(), scores.tolist(), strict=True)
        ]


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
