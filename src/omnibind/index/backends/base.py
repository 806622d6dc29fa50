"""The one interface an index's storage and search engine implements (local directory or Qdrant).

:class:`~omnibind.index.Index` owns everything that does not depend on where vectors live: the model and
its identity check, embedding raw values, composing a query of several modalities into one vector
(``index/query.py``), checking arguments and filters, merging the hits of several target modalities and
the adaptive cut. A backend only stores committed items and ranks stored vectors against one query vector.

What a backend holds per item: the id, a metadata dict, and per present modality a unit vector ``[D]`` and a
reference to the raw value (inline text or JSON, a resolved file path, and for images and audio either a
copy of the bytes or the path to read them from). ``meta`` is what ``index.json`` holds for a local index:
``model: {path, sha256}``, ``dim``, ``modalities: {name: kind}``, ``joint_similarity``, ``settings``.

Contract (``tests/index/test_qdrant.py`` checks Qdrant against the local backend on it):
    - ``write`` is one commit: after it returns the batch is durable and visible, before it nothing of it
      is; a reader never sees half a batch.
    - ``search`` scores with the plain inner product ``<query, vector>`` in float32, best first, and with
      ``exact`` it is exhaustive, so two backends holding the same vectors return the same top-k.
    - ``where`` is a filter dict already checked by :func:`~omnibind.index.search.check_where`; an item
      without a key does not match a condition on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from omnibind.index.search import SearchSettings

# one ranked list: (item id, score, metadata), best first
Ranked = list[tuple[str, float, dict[str, Any]]]


class Backend(Protocol):
    """Storage and vector search for one index (see the module docstring for the contract)."""

    location: str  # a directory, or a ``qdrant://`` / ``qdrant+path://`` URL, for messages
    meta: dict[str, Any]
    settings: SearchSettings

    def __len__(self) -> int:
        """Live items."""
        ...

    def has(self, item_id: str) -> bool:
        """Whether ``item_id`` is a live item."""
        ...

    def live(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are live items (one request per batch, not per id, for a remote engine)."""
        ...

    def ids(self) -> list[str]:
        """Ids of the live items (insertion order where the engine keeps one)."""
        ...

    def counts(self) -> dict[str, int]:
        """Live embeddings per modality."""
        ...

    def metadata_keys(self) -> list[str]:
        """Sorted metadata keys that at least one live item has."""
        ...

    def write(
        self,
        ids: Sequence[str],
        metadata: Sequence[dict[str, Any]],
        vectors: Mapping[str, np.ndarray],
        present: np.ndarray,
        raw: dict[str, list[dict[str, Any] | None]] | None,
        replace: bool,
    ) -> None:
        """Commit a batch: ``vectors[m]`` is ``float32[N, D]`` for every modality (rows of absent items
        ignored), ``present`` ``bool[N, M]`` in ``meta["modalities"]`` order, ``raw[m]`` per item the
        :func:`~omnibind.index.store.raw_columns` dict or None. ``replace`` replaces items with the same
        ids (ids are unique and, without ``replace``, new: the caller checked)."""
        ...

    def delete(self, ids: Sequence[str]) -> None:
        """Delete live items (the caller checked they exist), in one commit."""
        ...

    def item(self, item_id: str) -> dict[str, Any] | None:
        """``{"metadata": dict, "modalities": {m: {"value", "path", "has_bytes"}}}`` or None."""
        ...

    def media(self, item_id: str, modality: str) -> bytes | None:
        """The bytes of an item's image/audio value, or None."""
        ...

    def embedding(self, item_id: str, modality: str) -> np.ndarray | None:
        """An item's stored vector ``float32[D]`` in ``modality``, or None where absent."""
        ...

    def search(
        self,
        vector: np.ndarray,
        targets: Sequence[str],
        k: int,
        where: Mapping[str, Any] | None,
        exclude: str | None,
    ) -> tuple[dict[str, Ranked], str]:
        """Per target modality the top-``k`` items for ``vector [D]`` among those matching ``where``
        (``exclude``: an id left out), and the method used (``"exact"``, or the two-stage one)."""
        ...

    def search_many(self, vectors: np.ndarray, target: str, k: int) -> list[list[tuple[str, float]]]:
        """Exact top-``k`` of each query of ``vectors [Q, D]`` in ``target``: ``[(id, score)]`` per query."""
        ...

    def search_batch(self, vectors: np.ndarray, target: str, k: int) -> list[Ranked] | None:
        """The ``search`` of each query of ``vectors [Q, D]`` in ``target`` (no filter, nothing left out)
        in one pass, when the backend can rank them exactly as ``search`` would; None when it cannot (the
        caller then searches one query at a time)."""
        ...

    def prepare(self) -> None:
        """Build whatever the first search would otherwise build (a server calls this at start)."""
        ...

    def compact(self) -> None:
        """Reclaim the space of deleted and replaced items."""
        ...

    def close(self) -> None:
        """Release files, locks and connections."""
        ...
