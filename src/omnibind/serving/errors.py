"""Errors of the HTTP service: one JSON shape for all of them, and the request-body limit.

Every error, including validation, unknown routes and limits, is ``{"error": {"message", "type",
"status"}}``. Library errors map to a status by class (:data:`STATUS`); the service's own are
:class:`ApiError` with their status. Bad input is a 4xx; only a fault of the server is a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from omnibind.errors import ConfigError, DataError, OmnibindError
from omnibind.index import IndexStoreError, ModelMismatchError, SearchError, UnknownItemError
from omnibind.serving import schemas as s

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


# the error answers each route documents in the OpenAPI schema
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


def error(status: int, message: str, kind: str, details: list[Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"message": message, "type": kind, "status": status}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every exception with the JSON error body (a 500 only for the unexpected)."""

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
