"""Queries: raw values of one or several modalities, raw vectors, or an item of the index ("more like this").

A query of several modalities is *composed* into one vector scored by the model's joint similarity, with
the semantics of :func:`omnibind.evaluation.retrieval.joint_scores`: for ``"sum"`` (pairwise models)
the score of a target ``t`` is ``sum_i q_i . t = (sum_i q_i) . t``; for ``"mip"`` (Symile) it is the
multilinear inner product ``sum_d prod_i q_i[d] t[d] = (prod_i q_i) . t``. Either way the composed query is
a single ``[D]`` vector, so the same exact or two-stage search answers it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from omnibind.index.store import SearchError


@dataclass
class Query:
    """What to search for.

    Attributes:
        values: modality -> raw value (text, a file path, an array, a table row); embedded by the model.
        vectors: modality -> an embedding ``[D]`` already in the model's space (normalised here).
        like: an item id: use that item's own embedding ("more like this"); the item is left out of the
            results.
        like_modality: which of the item's embeddings to use; default the search target if the item has it,
            else its first present modality.

    Example:
        >>> Query(values={"caption": "a red circle", "image": "sketch.png"}).modalities()  # composed
        ['caption', 'image']
    """

    values: dict[str, Any] = field(default_factory=dict)
    vectors: dict[str, Any] = field(default_factory=dict)
    like: str | None = None
    like_modality: str | None = None

    def modalities(self) -> list[str]:
        """The query modalities named by ``values`` and ``vectors``."""
        return list(self.values) + [m for m in self.vectors if m not in self.values]


def as_query(query: Query | Mapping[str, Any] | np.ndarray | Any) -> Query:
    """Accept a :class:`Query`, a ``{modality: raw value}`` dict, or a raw vector (array or tensor)."""
    if isinstance(query, Query):
        return query
    if isinstance(query, Mapping):
        return Query(values=dict(query))
    if hasattr(query, "detach"):  # a torch tensor
        query = query.detach().cpu().numpy()
    if isinstance(query, (np.ndarray, list, tuple)):
        return Query(vectors={"": np.asarray(query)})
    raise SearchError(
        f"a query is a Query, a {{modality: value}} dict or a vector, not {type(query).__name__}"
    )


def check_vector(vector: Any, dim: int, name: str = "query vector") -> np.ndarray:
    """A finite, non-zero vector of width ``dim``, as unit float32 ``[dim]``."""
    try:
        v = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError):
        raise SearchError(f"{name} must be a list of {dim} numbers") from None
    if v.ndim == 2 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 1 or v.shape[0] != dim:
        raise SearchError(f"{name} has shape {list(v.shape)}; this index holds vectors of width {dim}")
    if not np.isfinite(v).all():
        raise SearchError(f"{name} contains NaN or infinite values")
    norm = float(np.linalg.norm(v))
    if norm == 0.0:
        raise SearchError(f"{name} is all zeros; it has no direction to search in")
    return v / norm


def compose(vectors: list[np.ndarray], similarity: str) -> np.ndarray:
    """One ``[D]`` query from unit ``[D]`` vectors: their sum (``"sum"``) or product (``"mip"``)."""
    if not vectors:
        raise SearchError("a query needs at least one modality value, vector or item id")
    stacked = np.stack(vectors)  # [Q, D]
    if similarity == "sum":
        return stacked.sum(axis=0)
    if similarity == "mip":
        return stacked.prod(axis=0)
    raise SearchError(f"joint similarity must be 'sum' or 'mip', got {similarity!r}")
