"""The on-disk side of an index: one LanceDB table of items plus ``index.json`` naming the model.

Layout of an index directory::

    INDEX/
      index.json        format, model path + sha256 of its config.json and model.safetensors, width D,
                        modalities and their kinds, search settings
      db/items.lance/   one row per item (LanceDB, versioned)

Columns of ``items``: ``id`` (string), ``metadata`` (JSON string) and, per modality ``m``,
``m__vector`` (``fixed_size_list<float32>[D]``, null when absent), ``m__value`` (inline text, or JSON for
numbers / tables), ``m__path`` (resolved source file) and ``m__bytes`` (a copy of image and audio media,
for display). Every write is one LanceDB commit, so a batch of items is either wholly visible or not at
all, and a killed writer leaves the previous version readable.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from omnibind.errors import OmnibindError
from omnibind.io import write_json_atomic

FORMAT = "omnibind-index/1"
META_NAME = "index.json"
TABLE = "items"
MEDIA_KINDS = ("image", "audio")  # file bytes copied into the index so a server can show them


class IndexStoreError(OmnibindError):
    """A directory is not an index, or the index is damaged."""


class ModelMismatchError(OmnibindError):
    """The model given (or found) is not the one the index was built with."""


class SearchError(OmnibindError, ValueError):
    """A query or a request argument is wrong: unknown modality, bad k, bad vector, bad filter."""


class UnknownItemError(OmnibindError, LookupError):
    """An id that the index does not hold."""


def model_hash(model_dir: str | Path) -> str:
    """sha256 over the model's ``config.json`` bytes then its ``model.safetensors`` bytes."""
    from omnibind.model import CONFIG_NAME, WEIGHTS_NAME

    digest = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        with open(Path(model_dir) / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``index.json`` of ``path``; raises ``IndexStoreError`` when ``path`` is not an index."""
    meta_path = Path(path) / META_NAME
    if not meta_path.is_file():
        raise IndexStoreError(
            f"{path} is not an omnibind index (no {META_NAME}); build one with `omnibind index build RUN "
            "--data DATA --out INDEX`"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise IndexStoreError(f"{meta_path} is unreadable or not JSON ({exc})") from None
    if meta.get("format") != FORMAT:
        raise IndexStoreError(f"{meta_path}: unknown format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def _schema(modalities: Sequence[str], dim: int) -> Any:
    import pyarrow as pa

    fields = [pa.field("id", pa.string(), nullable=False), pa.field("metadata", pa.string())]
    for m in modalities:
        fields += [
            pa.field(f"{m}__vector", pa.list_(pa.float32(), dim)),
            pa.field(f"{m}__value", pa.string()),
            pa.field(f"{m}__path", pa.string()),
            pa.field(f"{m}__bytes", pa.binary()),
        ]
    return pa.schema(fields)


class ItemStore:
    """The LanceDB table of an index and its ``index.json``.

    Args:
        path: the index directory.
        meta: its parsed ``index.json``.
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = path
        self.meta = meta
        self.modalities: list[str] = list(meta["modalities"])
        self.dim = int(meta["dim"])
        self._db = _connect(path / "db")
        self.table = self._db.open_table(TABLE)

    @classmethod
    def create(cls, path: str | Path, meta: dict[str, Any]) -> ItemStore:
        """Make the table, then write ``index.json`` (so a directory with ``index.json`` has a table)."""
        path = Path(path)
        if (path / META_NAME).exists():
            raise IndexStoreError(f"{path} already holds an index; open it, or choose another directory")
        path.mkdir(parents=True, exist_ok=True)
        db = _connect(path / "db")
        db.create_table(TABLE, schema=_schema(meta["modalities"], int(meta["dim"])), mode="overwrite")
        write_json_atomic(path / META_NAME, {"format": FORMAT, **meta})
        return cls(path, read_meta(path))

    @classmethod
    def open(cls, path: str | Path) -> ItemStore:
        """Open an existing index directory."""
        path = Path(path)
        return cls(path, read_meta(path))

    def version(self) -> int:
        """The table version (grows with every commit)."""
        return int(self.table.version)

    def read(self, columns: Sequence[str] | None = None) -> Any:
        """The table (latest version) as a ``pyarrow.Table``, optionally only ``columns``."""
        self.table.checkout_latest()
        if columns is None:
            return self.table.to_arrow()
        # a plain scan (no vector): reads only the named columns, not the media bytes
        return self.table.search().select(list(columns)).limit(None).to_arrow()

    def append(self, rows: Any) -> None:
        """Append a ``pyarrow.Table`` of rows in one commit."""
        self.table.add(rows.cast(self.table.schema))

    def upsert(self, rows: Any) -> None:
        """Replace the rows with the same ids and insert the others, in one commit."""
        rows = rows.cast(self.table.schema)
        self.table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(
            rows,
            on_bad_vectors="null",  # absent modalities are null vectors, which merge_insert flags
        )

    def delete(self, ids: Sequence[str]) -> None:
        """Delete the rows of ``ids`` in one commit."""
        if ids:
            self.table.delete("id IN (" + ", ".join(_sql_string(i) for i in ids) + ")")

    def row(self, item_id: str) -> dict[str, Any] | None:
        """One row as a dict, or None."""
        found = self.table.search().where(f"id = {_sql_string(item_id)}").limit(1).to_list()
        return found[0] if found else None

    def compact(self) -> None:
        """Merge small fragments, drop deleted rows and remove old versions and orphaned files."""
        import warnings

        with warnings.catch_warnings():  # "removes every version but the latest" is what compact means
            warnings.simplefilter("ignore", UserWarning)
            self.table.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)


def _connect(db_dir: Path) -> Any:
    """The LanceDB database in ``db_dir``, with the storage engine's own log quiet unless asked for."""
    # LanceDB's Rust core logs to stderr at the level in LANCEDB_LOG, read once when lancedb is first
    # imported; its default prints a WARN "No existing dataset at ..." for every new index. Errors still
    # show, and a level the user set (LANCEDB_LOG=info to debug) wins. LANCE_LOG is the same switch of the
    # separate `pylance` package, which lancedb uses for some operations when it is installed.
    os.environ.setdefault("LANCEDB_LOG", "error")
    os.environ.setdefault("LANCE_LOG", "error")
    import lancedb

    return lancedb.connect(str(db_dir))


def _sql_string(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def encode_media(kind: str, value: Any, options: dict[str, Any]) -> tuple[bytes, str] | None:
    """An in-memory image/audio array as PNG / WAV bytes (so the index can show it); None otherwise."""
    if kind == "image":
        from PIL import Image

        arr = np.asarray(value)
        if arr.dtype != np.uint8:
            arr = np.clip(arr * 255.0 if arr.max() <= 1.0 else arr, 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        return buf.getvalue(), "image/png"
    if kind == "audio":
        import soundfile as sf

        wave, rate = value if isinstance(value, tuple) else (value, options.get("sample_rate", 16000))
        buf = io.BytesIO()
        sf.write(buf, np.asarray(wave, dtype=np.float32), int(rate), format="WAV")
        return buf.getvalue(), "audio/wav"
    return None


def raw_columns(kind: str, value: Any, base_dir: Path | None, options: dict[str, Any]) -> dict[str, Any]:
    """How one raw value is kept: ``{"value", "path", "bytes"}`` (any may be None).

    Text is copied inline; a file path is resolved (against the record's ``base_dir``) and, for images and
    audio, its bytes are copied; numbers, lists and dicts are kept inline as JSON; in-memory image/audio
    arrays are encoded to PNG/WAV bytes; other arrays go inline as JSON lists.
    """
    out: dict[str, Any] = {"value": None, "path": None, "bytes": None}
    if kind == "text":
        out["value"] = str(value)
    elif isinstance(value, (str, Path)):
        path = Path(value).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = Path(base_dir) / path
        out["path"] = str(path.resolve())
        if kind in MEDIA_KINDS and path.is_file():
            out["bytes"] = path.read_bytes()
    elif kind in MEDIA_KINDS:
        encoded = encode_media(kind, value, options)
        out["bytes"] = encoded[0] if encoded else None
    else:
        out["value"] = json.dumps(jsonable(value))
    return out


def jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if all(type(v) in (float, int, str) for v in value):
            return value  # the common case (a vector read from a manifest), without a call per number
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def rows_table(
    modalities: Sequence[str],
    dim: int,
    ids: Sequence[str],
    metadata: Sequence[dict[str, Any]],
    vectors: dict[str, np.ndarray],
    present: np.ndarray,
    raw: dict[str, list[dict[str, Any] | None]] | None = None,
) -> Any:
    """Build the ``pyarrow.Table`` of new rows.

    Inputs:
        vectors[m]: ``float32[N, D]`` (rows of absent items ignored); present: ``bool[N, M]`` in
        ``modalities`` order; raw[m]: per item the :func:`raw_columns` dict or None.
    """
    import pyarrow as pa

    n = len(ids)
    cols: dict[str, Any] = {
        "id": pa.array([str(i) for i in ids], pa.string()),
        "metadata": pa.array([json.dumps(jsonable(md or {})) for md in metadata], pa.string()),
    }
    for j, m in enumerate(modalities):
        mask = ~present[:, j]
        flat = pa.array(np.ascontiguousarray(vectors[m], dtype=np.float32).reshape(-1))
        cols[f"{m}__vector"] = pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(mask))
        entries = (raw or {}).get(m) or [None] * n
        for field, typ in (("value", pa.string()), ("path", pa.string()), ("bytes", pa.binary())):
            cols[f"{m}__{field}"] = pa.array([(e or {}).get(field) for e in entries], typ)
    return pa.table(cols)
