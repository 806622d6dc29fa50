"""Errors a user can act on: each says where (record, field) and what was expected."""

from __future__ import annotations

from typing import Any


class OmnibindError(Exception):
    """Base class of every error omnibind raises on purpose."""


class ConfigError(OmnibindError, ValueError):
    """A config key or value is wrong; the message names the dotted key and suggests the nearest."""


class DataError(OmnibindError, ValueError):
    """A record of the data is wrong.

    Args:
        message: what was expected.
        source: the manifest (or generator) the record comes from.
        line: 1-based line/row number in the manifest, if known.
        record_id: the item's id, if known.
        modality: the field (modality or column) at fault, if known.
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        line: int | None = None,
        record_id: str | None = None,
        modality: str | None = None,
    ) -> None:
        self.reason = message
        self.source = source
        self.line = line
        self.record_id = record_id
        self.modality = modality
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.source:
            where.append(str(self.source) + (f":{self.line}" if self.line is not None else ""))
        elif self.line is not None:
            where.append(f"line {self.line}")
        if self.record_id is not None:
            where.append(f"id={self.record_id!r}")
        if self.modality is not None:
            where.append(f"field '{self.modality}'")
        return (", ".join(where) + ": " if where else "") + self.reason

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # keeps the fields through pickling (a DataLoader worker hands its errors to the trainer)
        return (_data_error, (self.reason, self.source, self.line, self.record_id, self.modality))

    def to_json(self) -> dict[str, object]:
        """The error as a JSON-able dict (used for ``skipped.jsonl``)."""
        return {
            "source": self.source,
            "line": self.line,
            "id": self.record_id,
            "field": self.modality,
            "reason": self.reason,
        }


def _data_error(
    reason: str, source: str | None, line: int | None, record_id: str | None, modality: str | None
) -> DataError:
    return DataError(reason, source=source, line=line, record_id=record_id, modality=modality)
