"""Where an index lives: a local directory (the default) or a Qdrant collection.

``location`` is a directory, or a URL:

- ``qdrant://HOST:PORT/COLLECTION`` (``qdrants://`` for TLS): a Qdrant server; the API key is read from
  ``OMNIBIND_QDRANT_API_KEY`` or the file named by ``OMNIBIND_QDRANT_API_KEY_FILE``;
- ``qdrant+path://DIR/COLLECTION``: Qdrant's embedded local mode in ``DIR`` (one process at a time).

Both implement :class:`~omnibind.index.backends.base.Backend`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omnibind.index.backends.base import Backend as Backend
from omnibind.index.search import SearchSettings

SCHEMES = ("qdrant://", "qdrants://", "qdrant+path://")


def is_url(location: str | Path) -> bool:
    """Whether ``location`` names a Qdrant collection rather than a local directory."""
    return isinstance(location, str) and location.startswith(SCHEMES)


def create_backend(location: str | Path, meta: dict[str, Any], settings: SearchSettings) -> Backend:
    """A new, empty index at ``location`` holding ``meta`` (refused where one exists)."""
    if is_url(location):
        from omnibind.index.backends.qdrant import QdrantBackend

        return QdrantBackend.create(str(location), meta, settings)
    from omnibind.index.backends.local import LocalBackend

    return LocalBackend.create(location, meta, settings)


def open_backend(location: str | Path, settings: SearchSettings | None = None) -> Backend:
    """The index at ``location``; ``settings`` default to those stored with it."""
    if is_url(location):
        from omnibind.index.backends.qdrant import QdrantBackend

        return QdrantBackend.open(str(location), settings)
    from omnibind.index.backends.local import LocalBackend

    return LocalBackend.open(location, settings)
