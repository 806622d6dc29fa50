"""The Qdrant backend: an index as one Qdrant collection, on a server (``qdrant://HOST:PORT/COLLECTION``,
``qdrants://`` for TLS) or in Qdrant's embedded local mode (``qdrant+path://DIR/COLLECTION``).

What is stored where:
    - one point per item, id ``uuid5(NAMESPACE, item id)`` (Qdrant ids are integers or UUIDs), payload
      ``{"id", "seq", "metadata", "modalities", "raw": {m: {"value", "path", "copied"}}, "media": {m: b64}}``:
      ``seq`` orders :meth:`QdrantBackend.ids` by insertion; image and audio bytes are copied into
      ``media`` only where the value has no file path (else they are read from the path when asked for);
    - per present modality two named vectors, distance Dot (the local index scores with the plain inner
      product, and composed queries are not unit vectors): ``m`` (the embedding, width D, no HNSW graph:
      it is scanned exactly or re-ranks a shortlist) and ``m__prefix`` (the unit-normalised Matryoshka
      prefix, width ``settings.prefix``, with Qdrant's HNSW graph on a server) for the two-stage search;
    - in the collection's metadata: ``omnibind`` (the index meta: format, model path + sha256, dim,
      modalities and kinds, joint similarity, settings, created) and ``omnibind_state`` (live items per
      metadata key, and the next ``seq``).

Atomicity: Qdrant has no transaction over several points. A write goes out in requests of at most
``POINTS_PER_REQUEST`` points (and about ``BYTES_PER_REQUEST``); a server applies each request whole, so a
killed writer leaves the requests sent before it died: whole items, never part of one, and ``ids()`` and
``len`` agree on them. Local mode stores point by point, so there a kill can leave part of a request. The
key counts are raised before the points are written and lowered after they are deleted, so a kill leaves
them too high (a filter key then passes the typo check and matches nothing), never too low.
"""

from __future__ import annotations

import base64
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omnibind.index.backends.base import Ranked
from omnibind.index.backends.qdrant_connection import QdrantUrl, connect, parse_url, reported
from omnibind.index.search import SearchSettings
from omnibind.index.store import MEDIA_KINDS, IndexStoreError, jsonable

FORMAT = "omnibind-qdrant/1"
POINTS_PER_REQUEST = 256
BYTES_PER_REQUEST = 8 << 20  # well under a server's default 32 MB request limit, media included
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "omnibind")
META_KEY, STATE_KEY = "omnibind", "omnibind_state"
_PAGE = 1000


def point_id(item_id: str) -> str:
    """The Qdrant point id of an item (Qdrant takes integers or UUIDs, not arbitrary strings)."""
    return str(uuid.uuid5(NAMESPACE, item_id))


def _vectors_config(dim: int, prefix: int, settings: SearchSettings, modalities: Sequence[str]) -> dict:
    from qdrant_client import models

    full = models.VectorParams(size=dim, distance=models.Distance.DOT, hnsw_config=models.HnswConfigDiff(m=0))
    graph = models.HnswConfigDiff(m=settings.hnsw_m, ef_construct=settings.ef_construction)
    short = models.VectorParams(size=prefix, distance=models.Distance.DOT, hnsw_config=graph)
    return {name: params for m in modalities for name, params in ((m, full), (f"{m}__prefix", short))}


def _unit_prefix(x: np.ndarray, width: int) -> np.ndarray:
    """The first ``width`` coordinates of ``x [..., D]``, unit-normalised (as the local HNSW stage)."""
    cut = np.ascontiguousarray(x[..., :width], dtype=np.float32)
    return cut / np.maximum(np.linalg.norm(cut, axis=-1, keepdims=True), 1e-12)


class QdrantBackend:
    """An index held by one Qdrant collection (see the module docstring for what is stored where).

    Use :meth:`create` or :meth:`open`. Implements :class:`~omnibind.index.backends.base.Backend`.

    Args:
        where: the parsed URL.
        client: a ``QdrantClient`` for it.
        meta: the index meta stored with the collection.
        settings: search settings (``exact_threshold``, ``shortlist``, ``ef_search``; the prefix width is
            the one the collection was made with).
        key_source: where the API key came from (for messages), or None.
    """

    def __init__(
        self,
        where: QdrantUrl,
        client: Any,
        meta: dict[str, Any],
        settings: SearchSettings,
        key_source: str | None = None,
    ) -> None:
        self.where = where
        self.location = where.url
        self.client = client
        self.collection = where.collection
        self.meta = meta
        self.settings = settings
        self.modalities: list[str] = list(meta["modalities"])
        self.kinds: dict[str, str] = dict(meta["modalities"])
        self.dim = int(meta["dim"])
        self.prefix = min(int(meta["settings"]["prefix"]), self.dim)  # the stored prefix vectors' width
        self._key_source = key_source
        self._closed = False
        with self._reported():
            # both kept by this process from here on; counted once, not per search
            self._keys: Counter[str] = Counter(self._read_state()["keys"])
            self._counts = {m: self._count_vectors(m) for m in self.modalities}

    @classmethod
    def create(cls, url: str, meta: dict[str, Any], settings: SearchSettings) -> QdrantBackend:
        """A new collection holding ``meta``; refused where the collection exists."""
        from qdrant_client import models

        where = parse_url(url)
        if getattr(settings, "storage", "float32") != "float32":
            raise IndexStoreError(
                f"storage={settings.storage} is a setting of the local index; a Qdrant collection keeps "
                "float32 vectors (Qdrant's own quantization is configured on the server)"
            )
        meta = {"format": FORMAT, **meta}
        client, source = connect(where)
        try:
            with reported(where, source):
                if client.collection_exists(where.collection):
                    raise IndexStoreError(f"{url} already exists; open it, or choose another collection name")
                dim = int(meta["dim"])
                client.create_collection(
                    where.collection,
                    vectors_config=_vectors_config(
                        dim, min(settings.prefix, dim), settings, meta["modalities"]
                    ),
                    metadata={META_KEY: meta, STATE_KEY: {"keys": {}, "next_seq": 0}},
                )
                if where.path is None:  # a server orders a scroll by a payload field only with its index
                    client.create_payload_index(where.collection, "seq", models.PayloadSchemaType.INTEGER)
                if META_KEY not in (client.get_collection(where.collection).config.metadata or {}):
                    client.delete_collection(where.collection)
                    raise IndexStoreError(
                        f"the Qdrant server at {url} did not keep the collection metadata that holds the "
                        "index's model identity; use a server that does (Qdrant 1.16 or later)"
                    )
            return cls(where, client, meta, settings, source)
        except BaseException:
            client.close()
            raise

    @classmethod
    def open(cls, url: str, settings: SearchSettings | None = None) -> QdrantBackend:
        """An existing omnibind collection; ``settings`` default to those stored with it."""
        where = parse_url(url)
        if where.path is not None and not where.path.is_dir():
            raise IndexStoreError(f"{url}: there is no folder {where.path}")
        client, source = connect(where)
        try:
            with reported(where, source):
                if not client.collection_exists(where.collection):
                    raise IndexStoreError(
                        f"{url}: no such collection; build one with `omnibind index build RUN --data DATA "
                        f"--out {url}`"
                    )
                stored = client.get_collection(where.collection).config.metadata or {}
            meta = stored.get(META_KEY)
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise IndexStoreError(
                    f"{url} is a Qdrant collection that omnibind did not make (its metadata has no "
                    f"'{META_KEY}' entry of format {FORMAT!r}); choose another collection name"
                )
            return cls(where, client, meta, settings or SearchSettings(**meta["settings"]), source)
        except BaseException:
            client.close()
            raise

    def _reported(self) -> Any:
        return reported(self.where, self._key_source)

    def _read_state(self) -> dict[str, Any]:
        stored = self.client.get_collection(self.collection).config.metadata or {}
        return stored.get(STATE_KEY) or {"keys": {}, "next_seq": 0}

    def _write_state(self, next_seq: int) -> None:
        # keys that dropped to 0 are written as 0, not left out: a deep-merging server keeps no stale count
        state = {"keys": dict(self._keys), "next_seq": next_seq}
        self.client.update_collection(self.collection, metadata={STATE_KEY: state})

    def _count_vectors(self, modality: str) -> int:
        from qdrant_client import models

        has = models.Filter(must=[models.HasVectorCondition(has_vector=modality)])
        return int(self.client.count(self.collection, count_filter=has, exact=True).count)

    def _retrieve(self, item_id: str, payload: Any = False, vectors: Any = False) -> Any:
        found = self.client.retrieve(
            self.collection, [point_id(item_id)], with_payload=payload, with_vectors=vectors
        )
        return found[0] if found else None

    # ---- reads -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        with self._reported():
            return int(self.client.count(self.collection, exact=True).count)

    def has(self, item_id: str) -> bool:
        with self._reported():
            return self._retrieve(item_id) is not None

    def live(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are live: one ``retrieve`` per page of ids."""
        out: set[str] = set()
        ids = [str(i) for i in ids]
        with self._reported():
            for start in range(0, len(ids), _PAGE):
                found = self.client.retrieve(
                    self.collection, [point_id(i) for i in ids[start : start + _PAGE]], with_payload=["id"]
                )
                out.update(str(p.payload["id"]) for p in found)
        return out

    def ids(self) -> list[str]:
        """Ids of the live items in insertion order (a scroll ordered by ``seq``, a page at a time)."""
        from qdrant_client import models

        out: list[str] = []
        start = None
        with self._reported():
            while True:
                order = models.OrderBy(key="seq", start_from=start)
                page, _ = self.client.scroll(
                    self.collection, limit=_PAGE, order_by=order, with_payload=["id", "seq"]
                )
                out += [p.payload["id"] for p in page]
                if len(page) < _PAGE:
                    return out
                start = int(page[-1].payload["seq"]) + 1

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def metadata_keys(self) -> list[str]:
        return sorted(key for key, count in self._keys.items() if count > 0)

    def item(self, item_id: str) -> dict[str, Any] | None:
        with self._reported():
            found = self._retrieve(item_id, payload=["metadata", "raw"])
        if found is None:
            return None
        raw = found.payload.get("raw") or {}
        mods = {
            m: {
                "value": raw[m]["value"],
                "path": raw[m]["path"],
                "has_bytes": bool(raw[m]["copied"]) or self._file(m, raw[m]["path"]) is not None,
            }
            for m in self.modalities
            if m in raw
        }
        return {"metadata": found.payload.get("metadata") or {}, "modalities": mods}

    def _file(self, modality: str, path: str | None) -> Path | None:
        """The media file an image/audio value names, where it still exists."""
        if self.kinds[modality] not in MEDIA_KINDS or not path or not Path(path).is_file():
            return None
        return Path(path)

    def media(self, item_id: str, modality: str) -> bytes | None:
        """The copied bytes, else the bytes of the file the value names if it still exists, else None."""
        with self._reported():
            found = self._retrieve(item_id, payload=[f"media.{modality}", f"raw.{modality}"])
        if found is None:
            return None
        copied = (found.payload.get("media") or {}).get(modality)
        if copied is not None:
            return base64.b64decode(copied)
        file = self._file(modality, ((found.payload.get("raw") or {}).get(modality) or {}).get("path"))
        return file.read_bytes() if file is not None else None

    def embedding(self, item_id: str, modality: str) -> np.ndarray | None:
        with self._reported():
            found = self._retrieve(item_id, vectors=[modality])
        vector = None if found is None else (found.vector or {}).get(modality)
        return None if vector is None else np.asarray(vector, np.float32)

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
        """Upsert the batch (an upsert replaces a point whole: vectors the new item lacks are gone)."""
        with self._reported():
            old = self._payloads(ids) if replace else {}
            state = self._read_state()
            self._keys = Counter(state["keys"])
            self._keys.update(key for md in metadata for key in md)
            first = int(state["next_seq"])
            self._write_state(first + len(ids))  # before the points: a kill over-counts keys, never under
            prefixes = {m: _unit_prefix(np.asarray(v), self.prefix) for m, v in vectors.items()}
            points = [
                self._point(row, item_id, metadata[row], vectors, prefixes, present[row], raw, first + row)
                for row, item_id in enumerate(ids)
            ]
            for request in _requests(points):
                self.client.upsert(self.collection, request, wait=True)
                # counted per request: a write that fails half-way leaves this process's counts right
                self._count([p.payload["modalities"] for p in request], +1)
                self._count(
                    [old[p.payload["id"]]["modalities"] for p in request if p.payload["id"] in old], -1
                )
            if old:
                self._keys.subtract(key for p in old.values() for key in p.get("metadata") or {})
                self._write_state(first + len(ids))

    def _point(
        self,
        row: int,
        item_id: str,
        metadata: dict[str, Any],
        vectors: Mapping[str, np.ndarray],
        prefixes: Mapping[str, np.ndarray],
        present: np.ndarray,
        raw: dict[str, list[dict[str, Any] | None]] | None,
        seq: int,
    ) -> Any:
        from qdrant_client import models

        mods = [m for j, m in enumerate(self.modalities) if present[j]]
        named: dict[str, Any] = {}
        refs: dict[str, Any] = {}
        media: dict[str, str] = {}
        for m in mods:
            named[m] = vectors[m][row].tolist()
            named[f"{m}__prefix"] = prefixes[m][row].tolist()
            entries = (raw or {}).get(m)
            entry = (entries[row] if entries else None) or {}
            data = entry.get("bytes") if entry.get("path") is None else None  # a file is read when asked for
            refs[m] = {"value": entry.get("value"), "path": entry.get("path"), "copied": data is not None}
            if data is not None:
                media[m] = base64.b64encode(data).decode("ascii")
        payload = {
            "id": item_id,
            "seq": seq,
            "metadata": jsonable(dict(metadata)),
            "modalities": mods,
            "raw": refs,
            "media": media,
        }
        return models.PointStruct(id=point_id(item_id), vector=named, payload=payload)

    def _payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``{item id: {"metadata", "modalities"}}`` of those of ``ids`` that are stored."""
        out = {}
        for start in range(0, len(ids), _PAGE):
            chunk = [point_id(i) for i in ids[start : start + _PAGE]]
            for p in self.client.retrieve(
                self.collection, chunk, with_payload=["id", "metadata", "modalities"]
            ):
                out[p.payload["id"]] = p.payload
        return out

    def _count(self, modalities: list[list[str]], sign: int) -> None:
        for names in modalities:
            for m in names:
                self._counts[m] += sign

    def delete(self, ids: Sequence[str]) -> None:
        """Delete the points in one request; the key counts are lowered after it."""
        from qdrant_client import models

        with self._reported():
            old = self._payloads(ids)
            selector = models.PointIdsList(points=[point_id(i) for i in ids])
            self.client.delete(self.collection, points_selector=selector, wait=True)
            self._count([p.get("modalities") or [] for p in old.values()], -1)
            state = self._read_state()
            self._keys = Counter(state["keys"])
            self._keys.subtract(key for p in old.values() for key in p.get("metadata") or {})
            self._write_state(int(state["next_seq"]))

    def compact(self) -> None:
        """Nothing to do: a server's optimizer vacuums deleted points on its own, and local mode deletes
        them from its SQLite file at once."""
        return None

    def prepare(self) -> None:
        """Nothing to do: a server builds the prefix graphs as points arrive; local mode has none."""
        return None

    def close(self) -> None:
        """Close the client (local mode: releases the folder's lock)."""
        if not self._closed:
            self._closed = True
            self.client.close()

    # ---- search ----------------------------------------------------------------------------------
    def search(
        self,
        vector: np.ndarray,
        targets: Sequence[str],
        k: int,
        where: Mapping[str, Any] | None,
        exclude: str | None,
    ) -> tuple[dict[str, Ranked], str]:
        """Exact (``SearchParams(exact=True)``) where a modality holds at most ``exact_threshold`` vectors,
        else two-stage in one server-side query: a ``prefetch`` of ``shortlist`` candidates on the prefix
        vectors (HNSW), re-ranked at full width. The filter is the top-level one (Qdrant applies it in the
        prefetch too)."""
        from omnibind.index.backends.qdrant_filter import MatchesNothing, qdrant_filter

        try:
            flt = qdrant_filter(where, point_id(exclude) if exclude is not None else None)
        except MatchesNothing:
            return {m: [] for m in targets}, "exact"
        out: dict[str, Ranked] = {}
        method = "exact"
        with self._reported():
            for m in targets:
                two_stage = self._counts[m] > self.settings.exact_threshold
                method = "qdrant-two-stage" if two_stage else method
                points = self._query(vector, m, k, flt, two_stage)
                out[m] = [(p.payload["id"], float(p.score), p.payload.get("metadata") or {}) for p in points]
        return out, method

    def _query(self, vector: np.ndarray, modality: str, k: int, flt: Any, two_stage: bool) -> list[Any]:
        from qdrant_client import models

        prefetch, params = None, self._exact()
        if two_stage:  # the prefix shortlist (HNSW on a server), then the full-width re-rank of it
            want = max(self.settings.shortlist, k)
            ef = (
                None
                if self.where.path is not None
                else models.SearchParams(hnsw_ef=max(self.settings.ef_search, want))
            )
            short = _unit_prefix(np.asarray(vector), self.prefix).tolist()
            prefetch = models.Prefetch(query=short, using=f"{modality}__prefix", limit=want, params=ef)
            params = None  # a re-rank scores its shortlist exactly
        return self.client.query_points(
            self.collection,
            prefetch=prefetch,
            query=np.asarray(vector, np.float32).tolist(),
            using=modality,
            limit=k,
            query_filter=flt,
            search_params=params,
            with_payload=["id", "metadata"],
        ).points

    def _exact(self) -> Any:
        """``SearchParams(exact=True)`` for a server (local mode is always exact and warns about params)."""
        from qdrant_client import models

        return None if self.where.path is not None else models.SearchParams(exact=True)

    def search_batch(self, vectors: np.ndarray, target: str, k: int) -> list[Ranked] | None:
        return None  # the server answers each query (Qdrant batches on its side)

    def search_many(self, vectors: np.ndarray, target: str, k: int) -> list[list[tuple[str, float]]]:
        from qdrant_client import models

        out: list[list[tuple[str, float]]] = []
        with self._reported():
            for start in range(0, len(vectors), 64):
                requests = [
                    models.QueryRequest(
                        query=np.asarray(q, np.float32).tolist(),
                        using=target,
                        limit=k,
                        params=self._exact(),
                        with_payload=["id"],
                    )
                    for q in vectors[start : start + 64]
                ]
                for answer in self.client.query_batch_points(self.collection, requests):
                    out.append([(p.payload["id"], float(p.score)) for p in answer.points])
        return out


def _requests(points: list[Any]) -> Iterator[list[Any]]:
    """The points in requests of at most ``POINTS_PER_REQUEST`` points and about ``BYTES_PER_REQUEST``."""
    batch: list[Any] = []
    size = 0
    for p in points:
        # JSON floats take ~10 bytes; the media strings are already base64
        cost = 10 * sum(len(v) for v in p.vector.values()) + sum(len(s) for s in p.payload["media"].values())
        if batch and (len(batch) >= POINTS_PER_REQUEST or size + cost > BYTES_PER_REQUEST):
            yield batch
            batch, size = [], 0
        batch.append(p)
        size += cost
    if batch:
        yield batch
