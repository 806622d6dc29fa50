"""Metadata filters (the ``where`` dicts of :func:`~omnibind.index.search.filter_mask`) as Qdrant filters.

The semantics are the local index's: a value is equality, a list is "one of", a dict holds operators
``eq, ne, in, gt, gte, lt, lte``, and an item without the key matches no condition on it, ``ne``
included (Qdrant's ``must_not`` alone would let an item without the key through, so ``ne`` also requires
the key). Numbers compare as numbers (``2`` equals ``2.0``: a ``Range`` with ``gte = lte``, since Qdrant's
exact match keeps integers and floats apart); strings and booleans by exact match. Two differences from
the local index remain: a boolean never equals a number (Python's ``True == 1``), and a metadata value
that is a list matches when one of its elements does (Qdrant's rule for arrays).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from qdrant_client import models

from omnibind.index.store import SearchError

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class MatchesNothing(Exception):
    """The filter can match no item (``in: []``); Qdrant reads an empty ``should`` as "no condition"."""


def field(key: str) -> str:
    """The payload path of metadata key ``key`` (quoted where it is not a plain name)."""
    if _PLAIN_KEY.fullmatch(key):
        return f"metadata.{key}"
    if '"' in key:
        raise SearchError(f"filter on {key!r}: a Qdrant index cannot filter on a key containing '\"'")
    return f'metadata."{key}"'


def _equal(key: str, value: Any) -> models.Condition:
    path = field(key)
    if value is None:
        return models.IsNullCondition(is_null=models.PayloadField(key=path))
    if isinstance(value, (bool, str)):
        return models.FieldCondition(key=path, match=models.MatchValue(value=value))
    if isinstance(value, (int, float)):
        return models.FieldCondition(key=path, range=models.Range(gte=value, lte=value))
    raise SearchError(
        f"filter on '{key}': a Qdrant index compares numbers, strings and booleans, not {value!r}"
    )


def _one_of(key: str, values: Any) -> models.Condition:
    values = list(values)
    if not values:
        raise MatchesNothing
    strings = [v for v in values if isinstance(v, str)]
    conditions = [_equal(key, v) for v in values if not isinstance(v, str)]
    if strings:  # one MatchAny for all the strings
        conditions.append(models.FieldCondition(key=field(key), match=models.MatchAny(any=strings)))
    return conditions[0] if len(conditions) == 1 else models.Filter(should=conditions)


def _condition(key: str, cond: Any) -> models.Condition:
    if not isinstance(cond, Mapping):
        return _one_of(key, cond) if isinstance(cond, (list, tuple, set)) else _equal(key, cond)
    must: list[models.Condition] = []
    must_not: list[models.Condition] = []
    bounds = {op: v for op, v in cond.items() if op in ("gt", "gte", "lt", "lte")}
    if bounds:
        must.append(models.FieldCondition(key=field(key), range=models.Range(**bounds)))
    if "eq" in cond:
        must.append(_equal(key, cond["eq"]))
    if "in" in cond:
        must.append(_one_of(key, cond["in"]))
    if "ne" in cond:  # the key must be there: an item without it matches no condition on it
        must_not += [
            models.IsEmptyCondition(is_empty=models.PayloadField(key=field(key))),
            _equal(key, cond["ne"]),
        ]
    return models.Filter(must=must or None, must_not=must_not or None)


def qdrant_filter(where: Mapping[str, Any] | None, exclude_point: str | None) -> models.Filter | None:
    """The Qdrant filter for ``where`` (already checked by ``check_where``), leaving out the point
    ``exclude_point`` ("more like this"); None when there is nothing to filter.

    Raises:
        MatchesNothing: no item can match (the caller answers with no hits).
    """
    must = [_condition(key, cond) for key, cond in (where or {}).items()]
    must_not = [models.HasIdCondition(has_id=[exclude_point])] if exclude_point is not None else []
    if not must and not must_not:
        return None
    return models.Filter(must=must or None, must_not=must_not or None)
