"""Manifests: JSONL, CSV or Parquet tables of items, one row per :class:`~omnibind.data.record.Record`.

Columns:
    id          required; any value, turned into a string; unique.
    label       optional class label (in CSV, an integer-looking cell becomes an int).
    split       optional ``train`` / ``val`` / ``test``.
    facts       optional JSON object (in CSV a JSON string) of ground-truth facts.
    metadata    optional JSON object; columns named ``meta.<key>`` are added to it as ``<key>``.
    negatives   optional list of item ids: the item's hard negatives in training (in CSV a JSON list or
                ids separated by ``|``); training checks that each is a training item.
    <modality>  every other column must be a declared modality. A modality is absent from a row when its
                key is missing, null, an empty string or NaN (an empty CSV/Parquet cell), or an empty list.
                A modality declared ``multi: true`` may hold a list of values (several captions of one
                item); see :mod:`omnibind.data.views`.

Values are file paths (relative to the manifest's folder), inline text or numbers. In CSV a cell that
starts with ``[`` or ``{`` and parses as JSON is read as that JSON value (inline vectors, named columns).

Line numbers in errors are physical file lines for JSONL and CSV (the CSV header is line 1) and the
1-based row index for Parquet.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omnibind.data.record import Record
from omnibind.errors import DataError
from omnibind.registry import nearest

RESERVED = ("id", "label", "split", "facts", "metadata", "negatives")
META_PREFIX = "meta."
_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_NOT_A_MANIFEST = "not a JSONL/CSV/Parquet manifest"


def is_absent(value: Any) -> bool:
    """True for the values that mean "this modality is missing": None, '' and NaN."""
    if value is None:
        return True
    if isinstance(value, str):
        return value == ""
    return isinstance(value, float) and math.isnan(value)


def read_manifest(path: Path, modalities: list[str] | None = None, on_error: str = "stop") -> list[Record]:
    """Read a manifest into records (see the module docstring for the columns).

    Args:
        path: a ``.jsonl``/``.ndjson``, ``.csv`` or ``.parquet``/``.pq`` file.
        modalities: the declared modality names; ``None`` accepts any non-reserved column as a modality.
        on_error: ``stop`` raises the first bad row; ``skip`` drops bad rows (see :func:`read_manifest_rows`).

    Returns:
        the records, in file order; each ``base_dir`` is the manifest's folder.

    Raises:
        DataError: naming the manifest, line, id and column of the problem.
    """
    return read_manifest_rows(path, modalities, on_error)[0]


def read_manifest_rows(
    path: Path, modalities: list[str] | None = None, on_error: str = "stop"
) -> tuple[list[Record], list[DataError]]:
    """Like :func:`read_manifest`, also returning the row errors skipped when ``on_error="skip"``.

    Row errors (no modality present, missing id, malformed ``facts``/``metadata``) can be skipped.
    Structural errors (not a manifest, an undeclared column, a duplicate id) always raise.
    """
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    path = Path(path)
    source = str(path)
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"{_NOT_A_MANIFEST}: unknown extension {path.suffix!r} "
            "(use .jsonl, .ndjson, .csv, .parquet or .pq)",
            source=source,
        )
    if not path.is_file():
        raise DataError(f"manifest file {source!r} does not exist", source=source)
    base_dir = path.resolve().parent
    declared = None if modalities is None else list(modalities)
    records: list[Record] = []
    skipped: list[DataError] = []
    first_line: dict[str, int | None] = {}
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "parquet": _parquet_rows}[fmt](path)
    for line, row in rows:
        _check_columns(row, declared, source, line)
        try:
            record = _to_record(row, source, line, base_dir)
        except DataError as exc:
            if on_error == "stop":
                raise
            skipped.append(exc)
            continue
        if record.id in first_line:
            raise DataError(
                f"duplicate id {record.id!r}: already used at line {first_line[record.id]}; "
                "ids must be unique",
                source=source,
                line=line,
                record_id=record.id,
                modality="id",
            )
        first_line[record.id] = line
        records.append(record)
    return records, skipped


def _check_columns(row: dict[str, Any], declared: list[str] | None, source: str, line: int) -> None:
    if declared is None:
        return
    for key in row:
        if key in RESERVED or key.startswith(META_PREFIX) or key in declared:
            continue
        raise DataError(
            f"column '{key}' is not a declared modality{nearest(key, declared)}; declared modalities: "
            f"{', '.join(declared) or 'none'}; reserved columns: {', '.join(RESERVED)}, meta.<key>",
            source=source,
            line=line,
            modality=key,
        )


def _id_text(raw_id: Any) -> str:
    """An id as a string: ``3.0`` (a CSV or Parquet number) is ``"3"``."""
    return str(int(raw_id)) if isinstance(raw_id, float) and raw_id.is_integer() else str(raw_id)


def _to_record(row: dict[str, Any], source: str, line: int, base_dir: Path) -> Record:
    raw_id = row.get("id")
    if is_absent(raw_id):
        raise DataError("expected an 'id' in every row, found none", source=source, line=line, modality="id")
    rid = _id_text(raw_id)

    def fail(message: str, field: str) -> DataError:
        return DataError(message, source=source, line=line, record_id=rid, modality=field)

    facts = _json_object(row.get("facts"), "facts", fail)
    metadata = _json_object(row.get("metadata"), "metadata", fail) or {}
    negatives = _id_list(row.get("negatives"), fail)
    values: dict[str, Any] = {}
    for key, value in row.items():
        if key in RESERVED or is_absent(value) or _empty_list(value):
            continue
        if key.startswith(META_PREFIX):
            metadata[key[len(META_PREFIX) :]] = value
        else:
            values[key] = value
    if not values:
        raise fail("expected at least one modality value in the row, found none", "id")
    label = row.get("label")
    split = row.get("split")
    return Record(
        id=rid,
        values=values,
        label=None if is_absent(label) else label,
        split=None if is_absent(split) else str(split),
        facts=facts,
        metadata=metadata,
        source=source,
        line=line,
        base_dir=base_dir,
        negatives=negatives,
    )


def _id_list(value: Any, fail: Any) -> list[str] | None:
    """The ``negatives`` column: a list of ids (in CSV a JSON list or ``a|b|c``); None when empty."""
    if is_absent(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise fail(
                    f"expected 'negatives' to be a JSON list of ids, got {text[:60]!r}", "negatives"
                ) from None
        else:
            value = [part.strip() for part in text.split("|") if part.strip()]
    if not isinstance(value, (list, tuple)) or any(
        isinstance(v, (bool, dict, list)) or is_absent(v) for v in value
    ):
        raise fail(f"expected 'negatives' to be a list of item ids, got {value!r:.80}", "negatives")
    return [_id_text(v) for v in value] or None


def _empty_list(value: Any) -> bool:
    """A list of values (a multi-valued modality) with none in it: the modality is absent."""
    return isinstance(value, list) and all(v is None or v == "" for v in value)


def _json_object(value: Any, field: str, fail: Any) -> dict[str, Any] | None:
    if is_absent(value):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise fail(f"expected '{field}' to be a JSON object, got {value[:60]!r}", field) from None
    if not isinstance(value, dict):
        raise fail(f"expected '{field}' to be a JSON object, got {type(value).__name__}", field)
    return dict(value)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    source = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            for line_no, text in enumerate(f, start=1):
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{_NOT_A_MANIFEST}: invalid JSON ({exc.msg})", source=source, line=line_no
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(
                        f"{_NOT_A_MANIFEST}: expected one JSON object per line, got {type(row).__name__}",
                        source=source,
                        line=line_no,
                    )
                yield line_no, row
    except UnicodeDecodeError:
        raise DataError(f"{_NOT_A_MANIFEST}: the file is not UTF-8 text", source=source) from None


_INT = re.compile(r"-?\d+")


def _csv_cell(key: str, cell: str | None) -> Any:
    if cell is None:  # a row shorter than the header
        return None
    if key == "label" and _INT.fullmatch(cell.strip()):
        return int(cell)
    if key not in RESERVED and not key.startswith(META_PREFIX) and cell[:1] in ("[", "{"):
        try:
            return json.loads(cell)
        except json.JSONDecodeError:
            return cell
    return cell


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    source = str(path)
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, strict=True)
            header = reader.fieldnames
            if not header or "id" not in header:
                raise DataError(
                    f"{_NOT_A_MANIFEST}: expected a CSV header row with an 'id' column, got {header}",
                    source=source,
                    line=1,
                )
            for row in reader:
                extra = row.pop(None, None)  # type: ignore[call-overload]
                if extra:
                    raise DataError(
                        f"{_NOT_A_MANIFEST}: row has {len(header) + len(extra)} cells, "
                        f"header has {len(header)}",
                        source=source,
                        line=reader.line_num,
                    )
                yield reader.line_num, {k: _csv_cell(k, v) for k, v in row.items()}
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{_NOT_A_MANIFEST}: {exc}", source=source) from None


def _parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{_NOT_A_MANIFEST}: {exc}", source=str(path)) from None
    if "id" not in table.column_names:
        raise DataError(
            f"{_NOT_A_MANIFEST}: expected an 'id' column, got {table.column_names}", source=str(path)
        )
    yield from enumerate(table.to_pylist(), start=1)
