"""``create_app(index, settings)``: the HTTP service over an :class:`~omnibind.index.Index`.

The parts: ``service.py`` (what the routes share: index, settings, lock, input decoding), ``batcher.py``
(raw query values of concurrent requests embedded in one encoder call), ``routes.py``
(the API routes, which call the index's public API only), ``queries.py`` (reading and answering search and
embed requests), ``media.py`` (uploads decoded by the kind of their modality), ``errors.py`` (one JSON
error shape; bad input is a 4xx, never a 500), ``security.py`` (keys, limits) and ``schemas.py``.

Example::

    from omnibind.index import Index
    from omnibind.serving import ServeSettings, create_app

    app = create_app(Index.open("runs/demo/index"), ServeSettings())
    # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import torch
from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from omnibind.index import Index
from omnibind.serving.errors import BodyLimit, install_error_handlers
from omnibind.serving.routes import add_routes
from omnibind.serving.security import ApiKeys, ServeSettings
from omnibind.serving.service import Service

STATIC = Path(__file__).parent / "static"


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

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        yield
        await anyio.to_thread.run_sync(service.close)  # the batcher answers what waits, then its thread ends

    app = FastAPI(
        lifespan=lifespan,
        title="omnibind search",
        version="1",
        description="Search one embedding space by any modality or several. Errors are "
        '`{"error": {"message": ...}}`.',
    )
    app.state.service = service
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    add_routes(app, service)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


ENV = "OMNIBIND_SERVE"  # what `omnibind serve --processes N` hands each worker process


def settings_env(index: str, settings: ServeSettings) -> str:
    """The JSON that :func:`app_from_env` reads: the index location and the settings (keys as digests)."""
    return json.dumps({"index": index, "settings": dataclasses.asdict(settings)})


def app_from_env() -> FastAPI:
    """The app of one worker process of ``omnibind serve --processes N`` (a uvicorn factory).

    Each worker opens the index itself: a local index's vectors are memory-mapped, so the workers share
    one copy in the page cache, and a write in one worker is seen by the others at their next request.
    """
    spec: dict[str, Any] = json.loads(os.environ[ENV])
    raw = spec["settings"]
    keys = ApiKeys(tuple(raw["keys"]["read"]), tuple(raw["keys"]["write"]))
    settings = ServeSettings(**{**raw, "keys": keys})
    if settings.threads:  # the parent resolved them for its processes
        torch.set_num_threads(settings.threads)
    index = Index.open(spec["index"])
    index.build_graphs()
    try:
        index.model.eval()
    except Exception:  # noqa: BLE001 - the parent already warned; raw-value queries answer 409
        pass
    return create_app(index, settings)
