"""Reading search and embed requests (JSON or multipart with file parts) and answering them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from concurrent.futures import Future
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from omnibind.index import Query, SearchError
from omnibind.serving import schemas as s
from omnibind.serving.batcher import Batcher
from omnibind.serving.errors import ApiError
from omnibind.serving.service import Service

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


async def search_input(request: Request, service: Service) -> tuple[s.SearchRequest, list[Upload]]:
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


def read_query(service: Service, req: s.SearchRequest, uploads: list[Upload]) -> Query:
    """The query of a search (in a worker thread): check ``k`` and the target, decode uploads, and with
    batching on embed the raw values through the batcher (outside the read lock)."""
    if not 1 <= req.k <= service.settings.max_k:
        raise ApiError(400, f"k must be an integer from 1 to {service.settings.max_k}, got {req.k}")
    if req.target is not None:
        service.modality(req.target, "target modality")
    query = service.query(req, {m: service.media_value(m, data, ct) for m, data, ct in uploads})
    if not query.values:
        return query
    model = service.model()  # load once, outside the read lock
    if service.batcher is None or not model.config.model.normalize:
        return query
    return _embedded(service.batcher, query)


async def plain_answer(service: Service, req: s.SearchRequest) -> dict[str, Any] | None:
    """The ``SearchResponse`` body of a plain search (:func:`plain_search`) from the batcher; None when
    the request is not plain. A value the encoder refuses gets the 400 of the general path."""
    answer = plain_search(service, req)
    if answer is None:
        return None
    try:
        return await asyncio.wrap_future(answer)
    except (ValueError, OSError) as exc:  # from the encoder: what Index.query_vector turns into this
        modality = next(iter(req.values), None) or service.text_modality()
        raise SearchError(f"query value for '{modality}' cannot be used: {exc}") from None


def plain_search(service: Service, req: s.SearchRequest) -> Future[dict[str, Any]] | None:
    """With batching on, hand a plain search to the batcher whole and return its future (on the event
    loop: no worker thread). Plain: one raw JSON value (``text`` or ``values``), a ``target``, no
    filter, adaptive cut, vectors, media, "more like this" or items; the model loaded and normalising.
    The batcher embeds it with the others and ranks them together (``Service.search_rows``), so the
    hits are those of ``run_search``. None: not plain, answer it the general way."""
    if (
        service.batcher is None
        or not service.model_ready
        or req.target is None
        or req.where
        or req.min_score is not None
        or req.max_gap is not None
        or req.include_items
        or req.media
        or req.vectors
        or req.like is not None
        or req.like_modality is not None
        or len(req.values) + (req.text is not None) != 1
        or not service.index.model.config.model.normalize
    ):
        return None
    if not 1 <= req.k <= service.settings.max_k:
        raise ApiError(400, f"k must be an integer from 1 to {service.settings.max_k}, got {req.k}")
    service.modality(req.target, "target modality")
    ((modality, value),) = service.query(req, {}).values.items()
    return service.batcher.submit(modality, value, search=(req.target, req.k))


def _embedded(batcher: Batcher, query: Query) -> Query:
    """``query`` with its raw values replaced by their vectors, embedded with other requests' values.

    ``Index.query_vector`` composes vectors as it composes embedded values (``model.embed`` gives unit rows,
    ``check_vector`` keeps them unit), so the hits are those of the unbatched path. A value whose modality
    also has a given vector stays raw (one vector per key) and ``Index.search`` embeds it itself, as it
    does every value of a model that does not normalise its embeddings (``read_query``).
    """
    batched = {m: v for m, v in query.values.items() if m not in query.vectors}
    answers = {m: batcher.submit(m, v) for m, v in batched.items()}  # all submitted, then all awaited
    vectors = dict(query.vectors)
    for m, answer in answers.items():
        try:
            vectors[m] = answer.result()
        except (ValueError, OSError) as exc:  # what Index.query_vector turns into this SearchError
            raise SearchError(f"query value for '{m}' cannot be used: {exc}") from None
    values = {m: v for m, v in query.values.items() if m not in batched}
    return dataclasses.replace(query, values=values, vectors=vectors)


def run_search(service: Service, req: s.SearchRequest, query: Query) -> dict[str, Any]:
    """Answer a search (in a worker thread) under the read lock; returns the ``SearchResponse`` body."""
    with service.lock.read():
        start = time.perf_counter()
        result = service.index.search(
            query, target=req.target, k=req.k, where=req.where, min_score=req.min_score, max_gap=req.max_gap
        )
        items = None
        if req.include_items:
            items = {h.id: service.item_view(h.id)["modalities"] for h in result.hits}
    return result.to_json((time.perf_counter() - start) * 1000, items)


def run_embed(service: Service, req: s.EmbedRequest) -> dict[str, Any]:
    """Embed raw values or base64 media of one modality; returns the ``EmbedResponse`` body."""
    m = service.modality(req.modality)
    if bool(req.values) == bool(req.media):
        raise ApiError(400, "give exactly one of 'values' (raw values) or 'media' (base64 files)")
    if len(req.values) + len(req.media) > service.settings.max_embed:
        raise ApiError(413, f"at most {service.settings.max_embed} values per request")
    items = [service.safe_value(m, v) for v in req.values] + [service.b64_value(m, b) for b in req.media]
    service.model()
    try:
        vectors = service.embed(m, items)
    except (ValueError, TypeError, OSError) as exc:
        raise ApiError(400, f"cannot embed a value of '{m}': {exc}") from None
    return {"modality": m, "dim": service.index.dim, "vectors": vectors.tolist()}
