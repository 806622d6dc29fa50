"""``create_app(index, settings)``: the HTTP service over an :class:`~omnibind.index.Index`.

The routes call the index's public API only (``search``, ``get``, ``media``, ``add``, ``delete``,
``counts``) and the model the index names (``index.model.embed``). Uploaded media are decoded by the kind
of their modality (:data:`DECODERS`, keyed by kind name), so a new kind needs one entry there, no new
route. Every error, including validation, unknown routes and limits, is JSON
``{"error": {"message", "type", "status"}}``; bad input is a 4xx, never a 500.

Example::

    from omnibind.index import Index
    from omnibind.serving import ServeSettings, create_app

    app = create_app(Index.open("runs/demo/index"), ServeSettings())
    # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from omnibind.data.record import Record
from omnibind.errors import ConfigError, DataError, OmnibindError
from omnibind.index import (
    Index,
    IndexStoreError,
    ModelMismatchError,
    Query,
    SearchError,
    UnknownItemError,
)
from omnibind.serving import schemas as s
from omnibind.serving.security import ServeSettings

STATIC = Path(__file__).parent / "static"
MAX_PIXELS = 16_000_000  # an uploaded image larger than this is refused before it is decoded
log = logging.getLogger("omnibind.serving")


class ApiError(OmnibindError):
    """An error with its HTTP status (raised by the service itself)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# most specific first: the first class an exception is an instance of gives its status
STATUS: list[tuple[type[Exception], int]] = [
    (UnknownItemError, 404),
    (ModelMismatchError, 409),
    (IndexStoreError, 500),
    (SearchError, 400),
    (DataError, 400),
    (ConfigError, 400),
    (OmnibindError, 400),
]


# ---- media ---------------------------------------------------------------------------------------
def _decode_image(data: bytes) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_PIXELS:  # checked before decoding: a small file can unpack huge
            raise ApiError(413, f"the image is {img.width}x{img.height}; at most {MAX_PIXELS:,} pixels")
        img.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise ApiError(400, f"the image is corrupt or not a PNG/JPEG/GIF/WebP file ({exc})") from None
    return img


def _decode_audio(data: bytes) -> Any:
    import numpy as np
    import soundfile

    try:
        wave, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)  # [samples, ch]
    except (RuntimeError, OSError, TypeError, ValueError) as exc:
        raise ApiError(400, f"the audio is corrupt or not a WAV/FLAC/OGG file ({exc})") from None
    wave = np.ascontiguousarray(wave.T)  # [channels, samples], as the audio kind takes it
    return (wave[0] if wave.shape[0] == 1 else wave), int(rate)


def _decode_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "a text upload must be UTF-8") from None


# kind name -> (accepted media type prefix, decoder of file bytes into a raw value the kind loads)
DECODERS: dict[str, tuple[str, Callable[[bytes], Any]]] = {
    "image": ("image/", _decode_image),
    "audio": ("audio/", _decode_audio),
    "text": ("text/", _decode_text),
}

MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"RIFF", "audio/wav"),  # WebP is RIFF....WEBP, checked first in _sniff
    (b"fLaC", "audio/flac"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
]


def _sniff(data: bytes) -> str | None:
    """The media type of file bytes from their first bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((t for magic, t in MAGIC if data.startswith(magic)), None)


# ---- shared state --------------------------------------------------------------------------------
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
    """What the routes share: the index, the settings, a lock, and input decoding."""

    def __init__(self, index: Index, settings: ServeSettings) -> None:
        self.index = index
        self.settings = settings
        self.lock = RWLock()
        # searches and embeddings wait here, first come first served, without holding a thread
        self.workers = anyio.CapacityLimiter(settings.workers or os.cpu_count() or 1)
        self._model_lock = threading.Lock()

    def model(self) -> Any:
        """The index's model, loaded once and kept in eval mode (``embed`` then never toggles it)."""
        with self._model_lock:
            model = self.index.model
            model.eval()
            return model

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
        sniffed = _sniff(data)
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


# ---- errors --------------------------------------------------------------------------------------
def error(status: int, message: str, kind: str, details: list[Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"message": message, "type": kind, "status": status}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OmnibindError)
    async def omnibind_error(request: Request, exc: OmnibindError) -> JSONResponse:
        status = getattr(exc, "status", None) or next(c for t, c in STATUS if isinstance(exc, t))
        if status >= 500:
            log.error("index error on %s: %s", request.url.path, exc)
        return error(status, str(exc), type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(exc.errors())

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs for the API"
        return error(exc.status_code, message, "HTTPException")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error(500, f"internal error ({type(exc).__name__}); the server log has details", "Internal")


def _validation_response(errors: Any) -> JSONResponse:
    details = [
        {"where": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")} for e in errors
    ]
    summary = "; ".join(f"{d['where'] or 'body'}: {d['problem']}" for d in details[:5])
    return error(422, f"the request does not match the API schema: {summary}", "ValidationError", details)


class BodyLimit:
    """ASGI middleware: refuse bodies over ``limit`` bytes with 413 (by Content-Length or while reading)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_big = error(
            413, f"the request body is larger than {self.limit} bytes; send smaller files", "TooLarge"
        )
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await too_big(scope, receive, send)
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise ApiError(413, f"the request body is larger than {self.limit} bytes; send smaller files")
            return message

        return await self.app(scope, counted, send)


# ---- routes --------------------------------------------------------------------------------------
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorResponse, "description": text}
    for code, text in (
        (400, "bad input: the message says what to change"),
        (401, "missing or unknown API key"),
        (403, "the key may not do this (writes need a write key)"),
        (404, "unknown item or route"),
        (409, "the index's model has changed"),
        (413, "request body too large"),
        (415, "wrong media type for the modality"),
        (422, "the body does not match the schema"),
    )
}
SEARCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": s.SearchRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "description": "a SearchRequest as JSON (optional)"},
                        "file": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "image / audio files; a part may instead be named after its "
                            "modality",
                        },
                    },
                }
            },
        },
    }
}
Upload = tuple[str, bytes, str | None]  # (modality, file bytes, declared media type)


def _key_from(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


def _require(service: Service, need: str) -> Any:
    def check(request: Request) -> None:
        keys = service.settings.keys
        if need == "write" and not keys.write:
            raise ApiError(
                403, "writes are disabled: start the server with --api-key-file holding a 'write KEY' line"
            )
        if not keys.configured:
            return
        key = _key_from(request)
        if not key:
            raise ApiError(401, f"this route needs a {need} API key: send 'Authorization: Bearer KEY'")
        role = keys.role(key)
        if role is None:
            raise ApiError(401, "the API key is not valid; check the key file the server was started with")
        if need == "write" and role != "write":
            raise ApiError(403, "this key may only read; adding and deleting items needs a write key")

    return Depends(check)


async def _search_input(request: Request, service: Service) -> tuple[s.SearchRequest, list[Upload]]:
    """The search request from a JSON body or from multipart form fields and file parts."""
    ctype = request.headers.get("content-type", "")
    uploads: list[Upload] = []
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=16, max_fields=32)
        except (ValueError, KeyError, AssertionError) as exc:
            raise ApiError(400, f"the multipart body cannot be read ({exc})") from None
        fields: dict[str, Any] = {}
        for name, part in form.multi_items():
            if isinstance(part, str):
                fields[name] = part
                continue
            data = await part.read()
            modality = service.upload_modality(name, part.content_type)
            uploads.append((modality, data, part.content_type))
        raw: Any = _form_query(fields)
    else:
        if ctype and not ctype.startswith("application/json"):
            raise ApiError(415, f"send application/json or multipart/form-data, not {ctype}")
        try:
            raw = json.loads(await request.body() or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"the body is not valid JSON ({exc})") from None
    try:
        return s.SearchRequest.model_validate(raw), uploads
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _form_query(fields: dict[str, str]) -> dict[str, Any]:
    """Form fields: ``query`` (a SearchRequest as JSON) and simple fields that override it."""
    try:
        raw = json.loads(fields.pop("query", "{}") or "{}")
        for name in ("where", "values", "vectors", "media"):
            if name in fields:
                fields[name] = json.loads(fields[name])
    except ValueError as exc:
        raise ApiError(400, f"a form field holds invalid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ApiError(400, "the form field 'query' must be a JSON object")
    return {**raw, **fields}


def _search(service: Service, req: s.SearchRequest, uploads: list[Upload]) -> dict[str, Any]:
    if not 1 <= req.k <= service.settings.max_k:
        raise ApiError(400, f"k must be an integer from 1 to {service.settings.max_k}, got {req.k}")
    if req.target is not None:
        service.modality(req.target, "target modality")
    query = service.query(req, {m: service.media_value(m, data, ct) for m, data, ct in uploads})
    if query.values:
        service.model()  # load once, outside the read lock
    with service.lock.read():
        start = time.perf_counter()
        result = service.index.search(
            query, target=req.target, k=req.k, where=req.where, min_score=req.min_score, max_gap=req.max_gap
        )
        hits = [
            {
                "id": h.id,
                "score": h.score,
                "modality": h.modality,
                "metadata": h.metadata,
                "item": service.item_view(h.id)["modalities"] if req.include_items else None,
            }
            for h in result.hits
        ]
    took = (time.perf_counter() - start) * 1000
    return {"hits": hits, "stopped_because": result.stopped_because, "method": result.method, "took_ms": took}


def _embed(service: Service, req: s.EmbedRequest) -> dict[str, Any]:
    m = service.modality(req.modality)
    if bool(req.values) == bool(req.media):
        raise ApiError(400, "give exactly one of 'values' (raw values) or 'media' (base64 files)")
    if len(req.values) + len(req.media) > service.settings.max_embed:
        raise ApiError(413, f"at most {service.settings.max_embed} values per request")
    items = [service.safe_value(m, v) for v in req.values] + [service.b64_value(m, b) for b in req.media]
    model = service.model()
    try:
        vectors = model.embed(items, m)
    except (ValueError, TypeError, OSError) as exc:
        raise ApiError(400, f"cannot embed a value of '{m}': {exc}") from None
    return {"modality": m, "dim": service.index.dim, "vectors": vectors.tolist()}


def _add_routes(app: FastAPI, service: Service) -> None:
    read = {"dependencies": [_require(service, "read")], "responses": ERRORS}
    write = {"dependencies": [_require(service, "write")], "responses": ERRORS}
    index, settings = service.index, service.settings

    @app.get("/healthz", response_model=s.Health, tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness: no key needed."""
        return {"status": "ok", "items": len(index)}

    @app.get("/v1/info", response_model=s.InfoResponse, **read, tags=["service"])
    def info() -> dict[str, Any]:
        """The model, its modalities (kind, live embeddings) and the service's limits."""
        counts = index.counts()
        return {
            "model": index.store.meta["model"]["path"],
            "dim": index.dim,
            "joint_similarity": index.similarity,
            "items": len(index),
            "modalities": {m: {"kind": kind, "count": counts[m]} for m, kind in index.kinds.items()},
            "limits": {
                "max_k": settings.max_k,
                "max_body_bytes": settings.max_body_bytes,
                "max_embed": settings.max_embed,
            },
            "writes_enabled": bool(settings.keys.write),
            "auth_required": settings.keys.configured,
        }

    @app.post(
        "/v1/search",
        response_model=s.SearchResponse,
        **read,
        openapi_extra=SEARCH_BODY,
        tags=["search"],
    )
    async def search(request: Request) -> Any:
        """Rank items for a query of raw values, media, vectors and/or an item id (JSON or multipart)."""
        req, uploads = await _search_input(request, service)
        return await anyio.to_thread.run_sync(_search, service, req, uploads, limiter=service.workers)

    @app.post("/v1/embed", response_model=s.EmbedResponse, **read, tags=["search"])
    async def embed(req: s.EmbedRequest) -> dict[str, Any]:
        """Embed values of one modality into the shared space (unit vectors of width D)."""
        return await anyio.to_thread.run_sync(_embed, service, req, limiter=service.workers)

    @app.get("/v1/items/{item_id}", response_model=s.ItemOut, **read, tags=["items"])
    def get_item(item_id: str) -> dict[str, Any]:
        """An item: metadata and, per present modality, its stored value, path and a media link."""
        with service.lock.read():
            return service.item_view(item_id)

    @app.get("/v1/items/{item_id}/{modality}", **read, tags=["items"])
    def get_media(item_id: str, modality: str) -> Response:
        """The item's value of one modality for display: the stored image / audio file, text or JSON."""
        service.modality(modality)
        with service.lock.read():
            found = service.index.get(item_id)["modalities"].get(modality)
            data = service.index.media(item_id, modality) if found and found["has_bytes"] else None
        if found is None:
            raise ApiError(404, f"item {item_id!r} has no '{modality}' value")
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "max-age=3600"}
        if data is not None:
            return Response(data, media_type=_sniff(data) or "application/octet-stream", headers=headers)
        if found["value"] is None:
            raise ApiError(404, f"item {item_id!r} keeps no copy of its '{modality}' value, only a path")
        text_kind = index.kinds[modality] == "text"
        media_type = "text/plain; charset=utf-8" if text_kind else "application/json"
        return Response(found["value"], media_type=media_type, headers=headers)

    @app.post(
        "/v1/items",
        response_model=s.AddItemsResponse,
        status_code=201,
        **write,
        tags=["items"],
    )
    def add_items(req: s.AddItemsRequest) -> dict[str, Any]:
        """Embed and add items in one commit (write key)."""
        if not req.items or len(req.items) > settings.max_embed:
            raise ApiError(400, f"send 1 to {settings.max_embed} items per request")
        records = [service.record(item) for item in req.items]
        service.model()
        with service.lock.write():
            added = index.add(records, batch_size=len(records), replace=req.replace)
        return {"added": added, "ids": [r.id for r in records]}

    @app.delete("/v1/items/{item_id}", response_model=s.DeleteResponse, **write, tags=["items"])
    def delete_item(item_id: str) -> dict[str, Any]:
        """Delete an item (write key); the next search no longer sees it."""
        with service.lock.write():
            index.delete([item_id])
        return {"deleted": item_id}


# ---- the app -------------------------------------------------------------------------------------
def create_app(index: Index, settings: ServeSettings | None = None) -> FastAPI:
    """The FastAPI app serving ``index`` (its model is the one the index names).

    Args:
        index: an open index.
        settings: address, keys and limits; :meth:`ServeSettings.check` runs here, so an app bound to a
            non-loopback host without keys is never built.

    Returns:
        the app; run it with ``uvicorn.run(app, host=settings.host, port=settings.port)``.
    """
    settings = settings or ServeSettings()
    settings.check()
    service = Service(index, settings)
    app = FastAPI(
        title="omnibind search",
        version="1",
        description="Search one embedding space by any modality or several. Errors are "
        '`{"error": {"message": ...}}`.',
    )
    app.state.service = service
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    _add_routes(app, service)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
