"""What a local index searches: an append-only, memory-mapped log of its items beside the LanceDB table.

``INDEX/vectors.json`` names the current log folder, ``INDEX/vectors-EPOCH/``; a rebuild (``compact``, or
recovery) writes a new folder and then replaces ``vectors.json``, so readers switch whole. Its files::

    state.json        the committed version: epoch, the LanceDB version it mirrors, item / row / byte counts,
                      the storage of the first stage, and how many live items have each metadata key
    ids.bin ids.off   item ids (utf-8, one after another) and their byte offsets ``int64[n + 1]``
    meta.bin meta.off each item's metadata as JSON ("" for none), and offsets
    dead.pos          ``int64`` positions of deleted or replaced items
    M.f32  M.item     per modality M: ``float32[rows, D]`` vectors and ``int64[rows]`` their item positions
    M.i8   M.scale    with ``storage: int8``: ``int8[rows, D]`` codes and ``float32[rows]`` one scale per row
    M.f16             with ``storage: float16``: ``float16[rows, D]``

``INDEX/vectors.lock`` is held by the one writer (``fcntl.flock``); readers never take it.

Why: the vectors are read through ``np.memmap``, so a process holds in RAM only the pages it touches, and
several processes (``omnibind serve --processes N``) share one copy in the page cache. With a quantized
first stage only the codes (a quarter or a half of the float32 bytes) are mapped and scanned; the float32
rows of the shortlist alone are read, with ``pread`` (:class:`FileRows`), to re-rank exactly.

How a write stays atomic: the writer appends past the committed sizes (invisible to readers), commits the
LanceDB table, then replaces ``state.json`` (temporary file, then rename). A reader maps exactly the counts
of the ``state.json`` it read, so it sees one committed version, never half a batch. A writer killed before
its ``state.json`` leaves bytes past the committed sizes, cut off by the next writer; one killed between the
LanceDB commit and ``state.json`` leaves a log one version behind the table, which the next open notices
(``lance_version``) and rebuilds from the table. The table stays the system of record.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from omnibind.io import write_json_atomic

FORMAT = "omnibind-vectors/1"
POINTER = "vectors.json"
LOCK = "vectors.lock"
STATE = "state.json"
STORAGES = ("float32", "float16", "int8")


class VectorLog:
    """One log folder of an index: reads its committed state, appends, commits.

    Args:
        root: the ``INDEX/vectors-EPOCH`` folder (must hold a ``state.json``; see :meth:`create`).
        modalities: modality names, in the index's order.
        dim: width D.
    """

    def __init__(self, root: Path, modalities: Sequence[str], dim: int) -> None:
        self.root = root
        self.modalities = list(modalities)
        self.dim = dim
        self.state = self.read_state()

    @classmethod
    def create(
        cls, root: Path, modalities: Sequence[str], dim: int, storage: str, lance_version: int
    ) -> VectorLog:
        """An empty log in ``root`` (made, or emptied)."""
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        root.mkdir(parents=True, exist_ok=True)
        for name in _file_names(modalities):
            (root / name).write_bytes(b"")
        (root / "ids.off").write_bytes(np.zeros(1, np.int64).tobytes())
        (root / "meta.off").write_bytes(np.zeros(1, np.int64).tobytes())
        state = {
            "format": FORMAT,
            "epoch": uuid.uuid4().hex,
            "lance_version": lance_version,
            "storage": storage,
            "items": 0,
            "ids_bytes": 0,
            "meta_bytes": 0,
            "dead": 0,
            "rows": {m: 0 for m in modalities},
            "keys": {},
        }
        write_json_atomic(root / STATE, state)
        return cls(root, modalities, dim)

    def read_state(self) -> dict[str, Any]:
        """The committed ``state.json``."""
        return json.loads((self.root / STATE).read_text())

    @property
    def storage(self) -> str:
        return str(self.state["storage"])

    def stamp(self) -> tuple[int, int]:
        """``(mtime_ns, inode)`` of ``state.json``: changes with every commit, read with one ``stat``."""
        st = os.stat(self.root / STATE)
        return st.st_mtime_ns, st.st_ino

    # ---- reading ---------------------------------------------------------------------------------
    def _map(self, name: str, dtype: Any, count: int, width: int | None = None) -> np.ndarray:
        shape = (count,) if width is None else (count, width)
        if count == 0:
            return np.zeros(shape, dtype)
        return np.memmap(self.root / name, dtype=dtype, mode="r", shape=shape)

    def ids(self, state: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(bytes uint8[ids_bytes], offsets int64[items + 1])`` of the committed ids, memory-mapped."""
        s = state or self.state
        return self._map("ids.bin", np.uint8, s["ids_bytes"]), self._map("ids.off", np.int64, s["items"] + 1)

    def metadata(self, state: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(bytes, offsets)`` of the committed metadata JSON, memory-mapped."""
        s = state or self.state
        return self._map("meta.bin", np.uint8, s["meta_bytes"]), self._map(
            "meta.off", np.int64, s["items"] + 1
        )

    def dead(self, state: Mapping[str, Any] | None = None) -> np.ndarray:
        """``int64[dead]``: positions of deleted or replaced items."""
        s = state or self.state
        return np.array(self._map("dead.pos", np.int64, s["dead"]))

    def rows(self, modality: str, state: Mapping[str, Any] | None = None) -> dict[str, np.ndarray | None]:
        """One modality's committed rows: ``vectors [rows, D]``, ``items [rows]`` and the first-stage
        ``codes`` (``int8`` or ``float16`` ``[rows, D]``, None for float32) and ``scales`` (int8 only)."""
        s = state or self.state
        n = int(s["rows"][modality])
        storage = s["storage"]
        vectors: np.ndarray | FileRows = (
            self._map(f"{modality}.f32", np.float32, n, self.dim)
            if storage == "float32"
            else FileRows(self.root / f"{modality}.f32", n, self.dim)
        )
        return {
            "vectors": vectors,
            "items": np.array(self._map(f"{modality}.item", np.int64, n)),
            "codes": (
                self._map(f"{modality}.i8", np.int8, n, self.dim)
                if storage == "int8"
                else self._map(f"{modality}.f16", np.float16, n, self.dim)
                if storage == "float16"
                else None
            ),
            "scales": self._map(f"{modality}.scale", np.float32, n) if storage == "int8" else None,
        }

    # ---- writing ---------------------------------------------------------------------------------
    def append(
        self,
        ids: Sequence[str],
        metadata: Sequence[dict[str, Any]],
        vectors: Mapping[str, np.ndarray],
        present: np.ndarray,
        dead: Sequence[int],
        dead_keys: Counter[str],
    ) -> dict[str, Any]:
        """Write a batch past the committed sizes and return the state that commits it (call
        :meth:`commit` with it once the table has the batch).

        Inputs: ``vectors[m]`` ``float32[N, D]``, ``present`` ``bool[N, M]``, ``dead`` positions of items
        this batch deletes or replaces, ``dead_keys`` their metadata keys. Hold :func:`writer_lock`.
        """
        s = json.loads(json.dumps(self.state))  # a copy: nothing changes until commit
        start = int(s["items"])
        id_bytes = [str(i).encode("utf-8") for i in ids]
        md_bytes = [json.dumps(md).encode("utf-8") if md else b"" for md in metadata]
        s["ids_bytes"] = self._tail("ids.bin", s["ids_bytes"], b"".join(id_bytes))
        s["meta_bytes"] = self._tail("meta.bin", s["meta_bytes"], b"".join(md_bytes))
        for name, parts, base in (
            ("ids.off", id_bytes, self.state["ids_bytes"]),
            ("meta.off", md_bytes, self.state["meta_bytes"]),
        ):
            ends = base + np.cumsum([len(p) for p in parts], dtype=np.int64)
            self._tail(name, (start + 1) * 8, ends.astype(np.int64).tobytes())
        s["items"] = start + len(ids)
        s["dead"] = self._tail("dead.pos", s["dead"] * 8, np.asarray(dead, np.int64).tobytes()) // 8
        for j, m in enumerate(self.modalities):
            take = np.flatnonzero(present[:, j])
            rows = np.ascontiguousarray(np.asarray(vectors[m], np.float32)[take])
            n = int(s["rows"][m])
            self._tail(f"{m}.f32", n * self.dim * 4, rows.tobytes())
            self._tail(f"{m}.item", n * 8, (start + take).astype(np.int64).tobytes())
            if s["storage"] == "int8":
                scale = np.maximum(np.abs(rows).max(axis=1, initial=0.0), 1e-12) / 127.0  # [rows]
                codes = np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8)
                self._tail(f"{m}.i8", n * self.dim, codes.tobytes())
                self._tail(f"{m}.scale", n * 4, scale.astype(np.float32).tobytes())
            elif s["storage"] == "float16":
                self._tail(f"{m}.f16", n * self.dim * 2, rows.astype(np.float16).tobytes())
            s["rows"][m] = n + len(take)
        keys = Counter(s["keys"])
        keys.update(key for md in metadata for key in (md or {}))
        keys.subtract(dead_keys)
        s["keys"] = {key: c for key, c in keys.items() if c > 0}
        return s

    def _tail(self, name: str, committed: int, data: bytes) -> int:
        """Cut ``name`` to ``committed`` bytes (dropping what a killed writer left), append, flush, fsync;
        returns the new size."""
        with open(self.root / name, "r+b") as fh:
            fh.truncate(committed)
            fh.seek(committed)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return committed + len(data)

    def commit(self, state: dict[str, Any], lance_version: int) -> None:
        """Publish ``state`` (readers see the batch from now on)."""
        state["lance_version"] = lance_version
        write_json_atomic(self.root / STATE, state)
        self.state = state


class FileRows:
    """Rows of a ``float32[rows, D]`` file read with ``os.pread``, for the exact re-rank after a quantized
    first stage.

    Why not a memory map: touching a few hundred scattered rows of a mapped file maps whole page-cache
    folios around each (measured: 200 rows of a 1 GB file made 330 MiB resident, MADV_RANDOM or not), so
    a search process counted most of the float32 file as its own. ``pread`` copies just the rows asked for;
    the file stays in the page cache, shared and reclaimable, not in the process.

    Indexing takes an ``int``, a ``slice`` (step 1) or an integer array, like the ``ndarray`` it stands for.
    """

    def __init__(self, path: Path, rows: int, dim: int) -> None:
        self.path = path
        self.shape = (rows, dim)
        self.dtype = np.dtype(np.float32)
        self._row = dim * 4
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def _read(self, start: int, count: int) -> bytes:
        want = count * self._row
        data = os.pread(self._fd, want, start * self._row)
        if len(data) != want:
            raise OSError(f"{self.path}: expected {want} bytes at row {start}, read {len(data)}")
        return data

    def __getitem__(self, key: Any) -> np.ndarray:
        n, d = self.shape
        if isinstance(key, (int, np.integer)):
            i = int(key) + n if key < 0 else int(key)
            if not 0 <= i < n:
                raise IndexError(f"row {key} out of range for {n} rows")
            return np.frombuffer(self._read(i, 1), np.float32).copy()
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step != 1:
                raise IndexError("FileRows slices take step 1")
            count = max(stop - start, 0)
            return np.frombuffer(self._read(start, count), np.float32).reshape(count, d).copy()
        rows = np.asarray(key, np.int64).reshape(-1)
        rows = np.where(rows < 0, rows + n, rows)
        if len(rows) and (rows.min() < 0 or rows.max() >= n):
            raise IndexError(f"rows out of range for {n} rows")
        out = np.empty((len(rows), d), np.float32)
        # each run of consecutive rows is one read (a shortlist sorted in file order has the fewest)
        starts = np.flatnonzero(np.diff(rows, prepend=-2) != 1)  # [runs] where each run begins
        ends = np.append(starts[1:], len(rows))[: len(starts)]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            out[a:b] = np.frombuffer(self._read(int(rows[a]), b - a), np.float32).reshape(b - a, d)
        return out.reshape(*np.shape(key), d)


def _file_names(modalities: Sequence[str]) -> list[str]:
    names = ["ids.bin", "ids.off", "meta.bin", "meta.off", "dead.pos"]
    for m in modalities:
        names += [f"{m}.{ext}" for ext in ("f32", "item", "i8", "scale", "f16")]
    return names


def current(index_dir: Path) -> Path | None:
    """The log folder ``vectors.json`` names, or None (an index built before logs, or being made)."""
    try:
        name = json.loads((index_dir / POINTER).read_text())["dir"]
    except FileNotFoundError:
        return None
    root = index_dir / name
    return root if (root / STATE).is_file() else None


def new_root(index_dir: Path) -> Path:
    """A fresh, unpublished log folder name."""
    return index_dir / f"vectors-{uuid.uuid4().hex[:12]}"


def publish(index_dir: Path, root: Path) -> None:
    """Make ``root`` the current log, then remove the others (readers holding their files keep them)."""
    write_json_atomic(index_dir / POINTER, {"dir": root.name})
    for other in index_dir.glob("vectors-*"):
        if other.is_dir() and other.name != root.name:
            shutil.rmtree(other, ignore_errors=True)


@contextmanager
def writer_lock(index_dir: Path) -> Iterator[None]:
    """Hold the index's writer lock (blocks while another process writes)."""
    with open(index_dir / LOCK, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
