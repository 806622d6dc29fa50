"""Where a Qdrant index lives and how to reach it: URL parsing, the API key, the client, and Qdrant's
transport and HTTP errors turned into messages that name the URL and say what to do.

``qdrant://HOST[:PORT]/COLLECTION`` (``qdrants://`` for TLS; PORT defaults to 6333, a path before the
collection is the server's URL prefix) is a server, reached with ``QdrantClient(url=..., api_key=...,
timeout=TIMEOUT_S)``; the API key is ``OMNIBIND_QDRANT_API_KEY``, or the contents (stripped) of the file
that ``OMNIBIND_QDRANT_API_KEY_FILE`` names. ``qdrant+path://DIR/COLLECTION`` is Qdrant's embedded local
mode in DIR (``QdrantClient(path=DIR)``: one client at a time, it locks the folder).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from omnibind.index.store import IndexStoreError

API_KEY_ENV = "OMNIBIND_QDRANT_API_KEY"
API_KEY_FILE_ENV = "OMNIBIND_QDRANT_API_KEY_FILE"
TIMEOUT_S = 10  # connect and request timeout of a server client
DEFAULT_PORT = 6333  # Qdrant's REST port
_NAME = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class QdrantUrl:
    """A parsed Qdrant location: ``url`` as given, the collection, and a server address or a folder."""

    url: str
    collection: str
    server: str | None = None  # http(s)://HOST:PORT[/PREFIX]
    path: Path | None = None  # the local-mode folder


def parse_url(url: str) -> QdrantUrl:
    """Read ``qdrant://HOST[:PORT]/COLLECTION``, ``qdrants://...`` or ``qdrant+path://DIR/COLLECTION``.

    Raises:
        IndexStoreError: no collection name, a bad port, no host or folder, another scheme.
    """
    if url.startswith("qdrant+path://"):
        folder, _, name = url[len("qdrant+path://") :].rstrip("/").rpartition("/")
        if not folder:
            raise IndexStoreError(
                f"{url}: write qdrant+path://DIR/COLLECTION (a folder, then the collection)"
            )
        return QdrantUrl(url, _check_name(url, name), path=Path(folder).expanduser())
    parts = urlsplit(url)
    scheme = {"qdrant": "http", "qdrants": "https"}.get(parts.scheme)
    if scheme is None:
        raise IndexStoreError(
            f"{url} is not a Qdrant URL; write qdrant://HOST:PORT/COLLECTION, qdrants://HOST:PORT/COLLECTION "
            "or qdrant+path://DIR/COLLECTION"
        )
    try:
        port = parts.port
    except ValueError:
        bad = parts.netloc.rpartition(":")[2]
        raise IndexStoreError(
            f"{url}: bad port {bad!r}; write {parts.scheme}://HOST:PORT/COLLECTION with PORT a number from 1 "
            f"to 65535 (Qdrant's REST port is {DEFAULT_PORT})"
        ) from None
    if not parts.hostname:
        raise IndexStoreError(f"{url}: no host; write {parts.scheme}://HOST:PORT/COLLECTION")
    if parts.query or parts.fragment:
        raise IndexStoreError(f"{url}: a Qdrant URL takes no '?' or '#' part")
    prefix, _, name = parts.path.strip("/").rpartition("/")
    netloc = parts.netloc if port else f"{parts.netloc}:{DEFAULT_PORT}"
    server = f"{scheme}://{netloc}" + (f"/{prefix}" if prefix else "")
    return QdrantUrl(url, _check_name(url, name), server=server)


def _check_name(url: str, name: str) -> str:
    if not name:
        raise IndexStoreError(f"{url}: no collection name; end the URL with /COLLECTION")
    if not _NAME.fullmatch(name):
        raise IndexStoreError(f"{url}: collection name {name!r}: use letters, digits, '_', '-' and '.'")
    return name


def api_key() -> tuple[str | None, str | None]:
    """``(key, where it came from)`` from ``OMNIBIND_QDRANT_API_KEY`` or the file named by
    ``OMNIBIND_QDRANT_API_KEY_FILE``; ``(None, None)`` when neither is set."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    if key:
        return key, API_KEY_ENV
    file = os.environ.get(API_KEY_FILE_ENV)
    if not file:
        return None, None
    try:
        key = Path(file).expanduser().read_text().strip()
    except OSError as exc:
        raise IndexStoreError(
            f"{API_KEY_FILE_ENV}={file}: cannot read the API key ({exc.strerror})"
        ) from None
    if not key:
        raise IndexStoreError(f"{API_KEY_FILE_ENV}={file}: the file is empty")
    return key, f"{API_KEY_FILE_ENV} ({file})"


def connect(where: QdrantUrl) -> tuple[Any, str | None]:
    """A client for ``where`` and where its API key came from."""
    try:
        from qdrant_client import QdrantClient
    except ImportError:
        raise IndexStoreError(
            f"{where.url} is a Qdrant index, which needs qdrant-client: pip install 'omnibind[qdrant]'"
        ) from None
    if where.path is None:
        key, source = api_key()
        client = QdrantClient(url=where.server, api_key=key, timeout=TIMEOUT_S, check_compatibility=False)
        return client, source
    try:
        return QdrantClient(path=str(where.path)), None
    except RuntimeError as exc:  # the folder's lock is held: Qdrant's local mode is one client at a time
        raise IndexStoreError(
            f"{where.url}: {exc} Close the other index first (Index.close(), or end that process)."
        ) from None


@contextmanager
def reported(where: QdrantUrl, key_source: str | None) -> Iterator[None]:
    """Qdrant's transport and HTTP errors as ``IndexStoreError`` naming the URL and what to do."""
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    try:
        yield
    except UnexpectedResponse as exc:
        if exc.status_code in (401, 403):
            fix = (
                f"it refused the API key from {key_source}"
                if key_source
                else f"it needs an API key: set {API_KEY_ENV}, or {API_KEY_FILE_ENV} to a file that holds it"
            )
            raise IndexStoreError(
                f"the Qdrant server at {where.url} answered {exc.status_code} {exc.reason_phrase}: {fix}"
            ) from None
        body = exc.content.decode(errors="replace")[:300]
        raise IndexStoreError(
            f"the Qdrant server at {where.url} answered {exc.status_code} {exc.reason_phrase}: {body}"
        ) from None
    except ResponseHandlingException as exc:
        raise IndexStoreError(
            f"cannot reach the Qdrant server at {where.url} ({exc.source or exc}; timeout {TIMEOUT_S} s); "
            "is it running, and are the host and port right?"
        ) from None
