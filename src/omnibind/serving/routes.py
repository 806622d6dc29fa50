"""The routes: ``/healthz``, ``/v1/info``, ``/v1/search``, ``/v1/embed`` and ``/v1/items``.

Each route checks its key (:func:`require`), then calls the index's public API (``search``, ``get``,
``media``, ``add``, ``delete``, ``counts``) through the :class:`~omnibind.serving.service.Service`.
Searches and embeddings run in worker threads, at most ``ServeSettings.workers`` at once; with batching on,
raw query values are embedded first, by the :class:`~omnibind.serving.batcher.Batcher`, while their
requests wait outside those slots.
"""

from __future__ import annotations

from typing import Any

import anyio
import torch
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from omnibind.serving import schemas as s
from omnibind.serving.errors import ERRORS, ApiError
from omnibind.serving.media import sniff
from omnibind.serving.queries import (
    SEARCH_BODY,
    Upload,
    plain_answer,
    read_query,
    run_embed,
    run_search,
    search_input,
)
from omnibind.serving.service import Service


def key_from(request: Request) -> str | None:
    """The API key of a request: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY`` (None if neither)."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.headers.get("x-api-key")


def require(service: Service, need: str) -> Any:
    """A FastAPI dependency refusing a request without a key of role ``need`` ("read" or "write")."""

    def check(request: Request) -> None:
        keys = service.settings.keys
        if need == "write" and not keys.write:
            raise ApiError(
                403, "writes are disabled: start the server with --api-key-file holding a 'write KEY' line"
            )
        if not keys.configured:
            return
        key = key_from(request)
        if not key:
            raise ApiError(401, f"this route needs a {need} API key: send 'Authorization: Bearer KEY'")
        role = keys.role(key)
        if role is None:
            raise ApiError(401, "the API key is not valid; check the key file the server was started with")
        if need == "write" and role != "write":
            raise ApiError(403, "this key may only read; adding and deleting items needs a write key")

    return Depends(check)


async def _search(service: Service, request: Request) -> dict[str, Any]:
    req, uploads = await search_input(request, service)
    in_thread = anyio.to_thread.run_sync
    if service.batcher is None:  # one worker slot for decoding, embedding and searching
        return await in_thread(_read_and_search, service, req, uploads, limiter=service.workers)
    if not uploads and (plain := await plain_answer(service, req)) is not None:
        return plain  # embedded and ranked by the batcher, with the others: no worker thread
    # batching: a request waiting for the batcher must not hold one of the few `workers` slots
    query = await in_thread(read_query, service, req, uploads, limiter=service.encoding)
    return await in_thread(run_search, service, req, query, limiter=service.workers)


def _read_and_search(service: Service, req: s.SearchRequest, uploads: list[Upload]) -> dict[str, Any]:
    return run_search(service, req, read_query(service, req, uploads))


def _batching(service: Service) -> dict[str, Any] | None:
    """The batcher's settings and its encoder calls so far (None when batching is off)."""
    if service.batcher is None:
        return None
    stats = service.batcher.stats()
    return {
        "wait_ms": service.settings.batch_wait_ms,
        "max_batch": service.settings.max_batch,
        "batches": stats.batches,
        "values": stats.values,
        "largest": stats.largest,
        "mean": stats.mean,
    }


def add_routes(app: FastAPI, service: Service) -> None:
    """Register every API route of ``service`` on ``app``."""
    read = {"dependencies": [require(service, "read")], "responses": ERRORS}
    write = {"dependencies": [require(service, "write")], "responses": ERRORS}
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
            "model": index.meta["model"]["path"],
            "dim": index.dim,
            "joint_similarity": index.similarity,
            "items": len(index),
            "modalities": {m: {"kind": kind, "count": counts[m]} for m, kind in index.kinds.items()},
            "limits": {
                "max_k": settings.max_k,
                "max_body_bytes": settings.max_body_bytes,
                "max_embed": settings.max_embed,
            },
            "batching": _batching(service),
            "torch_threads": torch.get_num_threads(),
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
        with service.answering():
            return await _search(service, request)

    @app.post("/v1/embed", response_model=s.EmbedResponse, **read, tags=["search"])
    async def embed(req: s.EmbedRequest) -> dict[str, Any]:
        """Embed values of one modality into the shared space (unit vectors of width D)."""
        with service.answering():
            return await anyio.to_thread.run_sync(run_embed, service, req, limiter=service.encoding)

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
            return Response(data, media_type=sniff(data) or "application/octet-stream", headers=headers)
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
