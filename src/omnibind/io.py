"""Atomic file writes: a reader sees either the old file or the complete new one, never a partial one.

Every helper writes to a temporary file in the target's folder (so that the final rename stays on one
file system), flushes and fsyncs it, then ``os.replace``-s it over the target and fsyncs the folder.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the directory entry is on disk; not every platform allows this.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def open_atomic(path: str | Path) -> Iterator[BinaryIO]:
    """Open ``path`` for writing in binary, atomically: the file appears, complete, when the block ends.

    For files too large to hold in memory (a shard). If the block raises, the temporary file is removed
    and ``path`` keeps its old content (or stays absent).

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.bin"
        >>> with open_atomic(target) as f:
        ...     _ = f.write(b"abc")
        >>> target.read_bytes()
        b'abc'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, creating parent folders; returns the path."""
    with open_atomic(path) as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (UTF-8, trailing newline) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write one JSON object per line to ``path`` atomically (the whole file is replaced, never appended)."""
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
    return write_text_atomic(path, "".join(lines))


def data_file(value: str | Path, base_dir: Path | None, expected: str) -> Path:
    """Resolve a manifest file path against ``base_dir`` and check that it exists.

    Raises:
        ValueError: the file does not exist; the message says what kind of file was ``expected``.
    """
    path = Path(value).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        raise ValueError(f"expected {expected}, but file {str(path)!r} does not exist")
    return path
