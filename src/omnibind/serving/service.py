"""What the routes share: the index, the settings, a readers-writer lock and the decoding of input."""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import anyio
import numpy as np
import torch

from omnibind.data.record import Record
from omnibind.index import Index, Query, SearchError
from omnibind.serving import schemas as s
from omnibind.serving.batcher import Batcher
from omnibind.serving.errors import ApiError
from omnibind.serving.media import DECODERS, sniff
from omnibind.serving.security import ServeSettings


class RWLock:
    """Many readers (searches) or one writer (add / delete) at a time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writer and self._readers == 0)
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class Service:
    """What the routes share: the index, the settings, a lock, the encoder batcher and input decoding."""

    def __init__(self, index: Index, settings: ServeSettings) -> None:
        self.index = index
        self.settings = settings
        self.lock = RWLock()
        # searches and embeddings wait here, first come first served, without holding a thread
        self.workers = anyio.CapacityLimiter(settings.workers or os.cpu_count() or 1)
        self._model_lock = threading.Lock()
        self.in_flight = 0  # search and embed requests being answered (changed on the event loop only)
        self.batcher: Batcher | None = None
        self.model_ready = False  # set by the first model(): until then requests load it in a thread
        self.encoding = self.workers
        if settings.batch_wait_ms > 0:
            wait, most = settings.batch_wait_ms, settings.max_batch
            self.batcher = Batcher(
                self._embed_now, wait, most, in_flight=lambda: self.in_flight, search=self.search_rows
            )
            # requests decoding and waiting for the batcher: a request waiting in a `workers` slot would
            # cap every batch at `workers` values; the encoder's CPU is the batcher's one thread
            self.encoding = anyio.CapacityLimiter(settings.max_batch)

    @contextmanager
    def answering(self) -> Iterator[None]:
        """Around a search or embed request, on the event loop: counted in :attr:`in_flight`."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def start(self) -> None:
        if self.batcher is not None:
            self.batcher.start()

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

    def model(self) -> Any:
        """The index's model, loaded once and kept in eval mode (``embed`` then never toggles it)."""
        with self._model_lock:
            model = self.index.model
            model.eval()
            self.model_ready = True
            return model

    def search_rows(self, target: str, vectors: np.ndarray, ks: list[int]) -> list[dict[str, Any]]:
        """``SearchResponse`` bodies for query vectors ``[n, D]`` of one target, ranked together
        (``Index.search_batch``) under the read lock; ``took_ms`` is the whole batch's search."""
        with self.lock.read():
            start = time.perf_counter()
            results = self.index.search_batch(vectors, target, ks)
            took = (time.perf_counter() - start) * 1000
        return [r.to_json(took) for r in results]

    def _embed_now(self, values: list[Any], modality: str) -> Any:
        return self.model().embed(values, modality)

    def embed(self, modality: str, values: list[Any]) -> np.ndarray:
        """``float32[n, D]`` unit rows for raw values of one modality: through the batcher when batching is
        on (with the values of other requests), else one encoder call. Raises what the model raises."""
        if self.batcher is None:
            with torch.no_grad():
                return self._embed_now(values, modality).numpy()
        rows = self.batcher.embed(modality, values)
        return np.stack(rows) if rows else np.zeros((0, self.index.dim), np.float32)

    def modality(self, name: str, what: str = "modality") -> str:
        if name not in self.index.kinds:
            raise SearchError(f"unknown {what} '{name}'; this index has: {', '.join(self.index.modalities)}")
        return name

    def text_modality(self) -> str:
        names = [m for m, kind in self.index.kinds.items() if kind == "text"]
        if len(names) != 1:
            raise SearchError(
                f"'text' needs exactly one text modality in the index, found {names or 'none'}; "
                'use "values": {"MODALITY": "..."}'
            )
        return names[0]

    def media_value(self, modality: str, data: bytes, declared: str | None = None) -> Any:
        """Decode uploaded file bytes by the kind of ``modality``; ``declared`` is the sender's media type."""
        kind = self.index.kinds[self.modality(modality)]
        if kind not in DECODERS:
            raise ApiError(
                415, f"modality '{modality}' ({kind}) takes a JSON value in 'values', not a file upload"
            )
        prefix, decode = DECODERS[kind]
        if not data:
            raise ApiError(400, f"the upload for '{modality}' is empty")
        sniffed = sniff(data)
        for media_type in (declared, sniffed):
            if media_type and media_type != "application/octet-stream" and not media_type.startswith(prefix):
                raise ApiError(
                    415, f"modality '{modality}' is {kind}: expected a {prefix}* file, got {media_type}"
                )
        value = decode(data)
        return self.safe_value(modality, value) if isinstance(value, str) else value

    def b64_value(self, modality: str, text: str) -> Any:
        """Decode base64 (optionally a ``data:TYPE;base64,`` URL) media for ``modality``."""
        declared = None
        if text.startswith("data:"):
            header, _, text = text.partition(",")
            declared = header[5:].split(";")[0] or None
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, f"media for '{modality}' is not valid base64") from None
        return self.media_value(modality, data, declared)

    def safe_value(self, modality: str, value: Any) -> Any:
        """A raw JSON value, refused where a kind would read it as a path on the server."""
        kind = self.index.kinds[self.modality(modality)]
        if isinstance(value, str) and kind != "text":
            raise ApiError(
                400, f"modality '{modality}' is {kind}: send a file in 'media' (base64) or upload one"
            )
        if isinstance(value, str) and value.strip().lower().endswith(".txt"):
            raise ApiError(400, f"text for '{modality}' must not end in '.txt' (it would be read as a file)")
        return value

    def upload_modality(self, field: str, media_type: str | None) -> str:
        """The modality of a multipart file part: its field name, or for ``file`` the one modality whose
        kind accepts the part's media type."""
        if field not in ("file", "files"):
            return self.modality(field, "query modality")
        major = (media_type or "").split("/")[0] + "/"
        kinds = [k for k, (prefix, _) in DECODERS.items() if prefix == major]
        names = [m for m, kind in self.index.kinds.items() if kind in kinds]
        if len(names) != 1:
            raise ApiError(
                415 if not names else 400,
                f"cannot tell which modality a {media_type or 'untyped'} file is for (candidates: "
                f"{names or 'none'}); name the form field after the modality",
            )
        return names[0]

    def record(self, item: s.ItemIn) -> Record:
        values = {m: self.safe_value(m, v) for m, v in item.values.items()}
        values.update({m: self.b64_value(m, b) for m, b in item.media.items()})
        if not values:
            raise ApiError(400, f"item {item.id!r} has no values; give 'values' or 'media'")
        return Record(id=item.id, values=values, metadata=item.metadata, source="POST /v1/items")

    def item_view(self, item_id: str) -> dict[str, Any]:
        """``Index.get`` plus each modality's kind and display URL."""
        item = self.index.get(item_id)
        for m, info in item["modalities"].items():
            info["kind"] = self.index.kinds[m]
            shown = info["has_bytes"] or info["value"] is not None
            info["url"] = f"/v1/items/{quote(item_id, safe='')}/{m}" if shown else None
        return item

    def query(self, req: s.SearchRequest, uploads: dict[str, Any]) -> Query:
        values: dict[str, Any] = {m: self.safe_value(m, v) for m, v in req.values.items()}
        if req.text is not None:
            values[self.text_modality()] = self.safe_value(self.text_modality(), req.text)
        for m, b64 in req.media.items():
            values[m] = self.b64_value(m, b64)
        values.update(uploads)
        vectors = {(self.modality(m, "query modality") if m else m): v for m, v in req.vectors.items()}
        if req.like_modality is not None:
            self.modality(req.like_modality)
        return Query(values=values, vectors=vectors, like=req.like, like_modality=req.like_modality)
