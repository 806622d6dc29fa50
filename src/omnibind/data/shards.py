"""WebDataset shards: write records as tar shards, and read shards back as records without decoding them.

Layout of a shards folder (the one open_clip and img2dataset users know)::

    DIR/shard-000000.tar     one sample per key, its members side by side:
        KEY.json               {"id", "label", "split", "metadata"} (and "facts" where the record has them)
        KEY.MODALITY.EXT       one member per *present* modality: a file value's own bytes with its own
                               extension (png, wav, npy, ...), .txt for inline text, .json for inline
                               numbers or named columns, .npy for in-memory arrays, .wav for (wave, rate)
    DIR/shard-000001.tar
    DIR/shards.json          written last: format, version, source, shards with their sample counts, ...

A key is the record id made safe for WebDataset (letters, digits, ``_`` and ``-``; no dots, no slashes),
with ``-2``, ``-3``... added where two ids make the same key; ``KEY.json`` keeps the original id.

Reading (:func:`load_shards`, what ``load_source`` calls for a folder, a ``.tar`` or a brace pattern
``DIR/shard-{000000..000031}.tar``) scans only the tar headers and the small ``KEY.json`` members: each
present modality's value is a :class:`ShardMember` pointing at its bytes, which a kind reads by offset
when the item is needed. Any item can then be read in any order, so the order of an epoch depends only on
(seed, epoch) and the items split across workers and ranks by index.
"""

from __future__ import annotations

import io
import itertools
import json
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omnibind.data.record import Record
from omnibind.data.sources import LoadedData
from omnibind.errors import DataError
from omnibind.io import data_file, open_atomic, write_json_atomic
from omnibind.registry import nearest

INDEX = "shards.json"
FORMAT = "omnibind-shards"
VERSION = 1
# A string that ends like this and has no spaces names a file even when the file is missing (an error then).
_FILE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff", ".wav", ".flac"}
_FILE_SUFFIXES |= {".ogg", ".mp3", ".npy", ".txt", ".json"}
_MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]+)$")  # WebDataset: the key is all before the first dot
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class ShardMember:
    """Where the bytes of one modality value lie in a shard.

    Attributes:
        shard: the tar file (absolute path).
        key: the sample's key.
        name: the member's name, ``KEY.MODALITY.EXT``.
        offset: byte offset of the member's data in the tar.
        size: the data's length in bytes.
    """

    shard: Path
    key: str
    name: str
    offset: int
    size: int

    @property
    def suffix(self) -> str:
        """The member's lower-case extension with its dot (``.png``)."""
        return Path(self.name).suffix.lower()

    @property
    def where(self) -> str:
        """How errors name the member: ``shard-000003.tar, key 'x42', member 'x42.image.png'``."""
        return f"{self.shard.name}, key {self.key!r}, member {self.name!r}"

    def read(self) -> bytes:
        """Exactly ``size`` bytes from ``offset``.

        Raises:
            DataError: the shard cannot be opened or ends before the member does.
        """
        try:
            with open(self.shard, "rb") as f:
                f.seek(self.offset)
                data = f.read(self.size)
        except OSError as exc:
            raise DataError(f"cannot read the shard ({exc})", source=str(self.shard)) from None
        if len(data) != self.size:
            raise DataError(
                f"the shard is truncated: {self.where} needs {self.size} bytes at offset {self.offset}, "
                f"found {len(data)}",
                source=str(self.shard),
            )
        return data


# ---------------------------------------------------------------------------------------------- writing


def write_shards(
    records: Iterable[Record],
    out_dir: str | Path,
    shard_size: int = 10_000,
    progress: bool = True,
    source: str | None = None,
) -> Path:
    """Write ``records`` as WebDataset tar shards ``out_dir/shard-NNNNNN.tar`` and ``out_dir/shards.json``.

    Every file is written atomically and ``shards.json`` last, so a folder with a ``shards.json`` is
    complete. An earlier ``shards.json`` is removed first and shards of an earlier, longer write that the
    new one does not replace are removed at the end; other files are left alone. Shards are byte-identical
    for the same records (fixed member times).

    Args:
        records: the items; any iterable, consumed once.
        out_dir: the folder (created if needed).
        shard_size: samples per shard (the last may hold fewer).
        progress: show a progress bar.
        source: where the records came from, kept in ``shards.json``.

    Returns:
        ``out_dir``, a source for :func:`omnibind.data.sources.load_source`.

    Raises:
        DataError: a record cannot be stored (a missing file, a value of an unknown type, a modality name
            with a dot or slash), naming the record; the shards of this call are removed, and no
            ``shards.json`` is written. Also when there are no records.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    from tqdm.auto import tqdm
    from webdataset import TarWriter

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / INDEX).unlink(missing_ok=True)  # an old index must not describe a half-rewritten folder
    stale = set(out.glob("shard-[0-9][0-9][0-9][0-9][0-9][0-9].tar"))
    shards: list[dict[str, Any]] = []
    present: dict[str, int] = {}
    used: set[str] = set()
    items = iter(records)
    bar = tqdm(desc="writing shards", unit="item", disable=not progress, leave=False)
    try:
        while chunk := list(itertools.islice(items, shard_size)):
            path = out / f"shard-{len(shards):06d}.tar"
            with open_atomic(path) as f:
                writer = TarWriter(f, encoder=False, mtime=0, format="PAX_FORMAT")
                try:
                    for rec in chunk:
                        writer.write(_sample(rec, used))
                        for name in rec.values:
                            present[name] = present.get(name, 0) + 1
                        bar.update()
                finally:  # also on error: the tar stream must not flush into a closed file later
                    writer.close()
            stale.discard(path)
            shards.append({"name": path.name, "samples": len(chunk), "bytes": path.stat().st_size})
    except BaseException:
        for s in shards:
            (out / s["name"]).unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    if not shards:
        raise DataError("no records to write", source=source)
    total = sum(s["samples"] for s in shards)
    index = {"format": FORMAT, "version": VERSION, "source": source, "total": total, "shard_size": shard_size}
    index.update({"modalities": list(present), "present": present, "shards": shards})
    write_json_atomic(out / INDEX, index)
    for path in stale:
        path.unlink(missing_ok=True)
    return out


def _sample(rec: Record, used: set[str]) -> dict[str, Any]:
    """The TarWriter dict of one record: ``__key__``, ``json`` and ``MODALITY.EXT`` -> bytes."""
    key = base = _UNSAFE.sub("_", rec.id)[:80] or "_"
    n = 1
    while key in used:
        n += 1
        key = f"{base}-{n}"
    used.add(key)
    meta = {"id": rec.id, "label": rec.label, "split": rec.split, "metadata": rec.metadata}
    if rec.facts is not None:
        meta["facts"] = rec.facts
    sample: dict[str, Any] = {"__key__": key, "json": _json_bytes(meta)}
    for modality, value in rec.values.items():

        def fail(message: str, field: str = modality) -> DataError:
            return DataError(message, source=rec.source, line=rec.line, record_id=rec.id, modality=field)

        if not modality or "." in modality or "/" in modality:
            raise fail("a modality name in a shard cannot be empty or hold a dot or a slash")
        try:
            suffix, data = _member_bytes(value, rec.base_dir)
        except ValueError as exc:  # DataError too
            raise fail(getattr(exc, "reason", str(exc))) from None
        sample[f"{modality}{suffix}"] = data
    return sample


def _member_bytes(value: Any, base_dir: Path | None) -> tuple[str, bytes]:
    """``(".ext", bytes)`` of one value: a file's own bytes, or an inline / in-memory value encoded."""
    if isinstance(value, ShardMember):  # re-sharding
        return value.suffix, value.read()
    if isinstance(value, Path) or (isinstance(value, str) and _names_file(value, base_dir)):
        path = data_file(value.strip() if isinstance(value, str) else value, base_dir, "a file")
        return path.suffix.lower() or ".bin", path.read_bytes()
    if isinstance(value, str):
        return ".txt", value.encode("utf-8")
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], (int, np.integer)):
        return ".wav", _wav_bytes(np.asarray(value[0]), int(value[1]))
    if isinstance(value, np.ndarray):
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return ".npy", buf.getvalue()
    if type(value).__module__.startswith("PIL."):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return ".png", buf.getvalue()
    if isinstance(value, (list, tuple, dict, int, float, np.generic)):
        return ".json", _json_bytes(value)
    raise ValueError(f"cannot store a value of type {type(value).__name__} in a shard")


def _names_file(value: str, base_dir: Path | None) -> bool:
    """Whether a string value is a file path (else it is inline text): an existing file, or a path-like
    string (no whitespace) with a data file's extension."""
    text = value.strip()
    if not text or "\n" in text:
        return False
    path = Path(text).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.is_file():
        return True
    return path.suffix.lower() in _FILE_SUFFIXES and not any(c.isspace() for c in text)


def _wav_bytes(wave: np.ndarray, rate: int) -> bytes:
    """A lossless WAV of a ``[samples]`` or ``[channels, samples]`` waveform: float32, or the PCM type."""
    import soundfile

    if wave.ndim not in (1, 2):
        raise ValueError(f"expected a waveform of shape [samples] or [channels, samples], got {wave.shape}")
    subtype = {np.dtype(np.int16): "PCM_16", np.dtype(np.int32): "PCM_32"}.get(wave.dtype, "FLOAT")
    data = wave.T if wave.ndim == 2 else wave  # soundfile wants [samples, channels]
    if subtype == "FLOAT":
        data = data.astype(np.float32)
    buf = io.BytesIO()
    soundfile.write(buf, data, rate, subtype=subtype, format="WAV")
    return buf.getvalue()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def _json_bytes(obj: Any) -> bytes:
    try:
        return json.dumps(obj, ensure_ascii=False, default=_json_default).encode("utf-8")
    except TypeError as exc:
        raise ValueError(f"cannot store the value as JSON ({exc})") from None


# ---------------------------------------------------------------------------------------------- reading


def is_shard_source(source: str) -> bool:
    """True for a source that names shards: a ``.tar`` path or brace pattern, or a folder."""
    return source.lower().endswith(".tar") or Path(source).expanduser().is_dir()


def shard_paths(source: str) -> tuple[list[Path], dict[str, Any] | None]:
    """The shard files of ``source`` and its ``shards.json`` (``None`` for a ``.tar`` or a pattern).

    Raises:
        DataError: a folder without a readable ``shards.json``, a missing shard (the first one named), an
            unbalanced brace pattern.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        index = _read_index(path / INDEX)
        paths = [path / s["name"] for s in index["shards"]]
    elif "{" in source or "}" in source:
        from braceexpand import braceexpand

        try:
            paths = [Path(p).expanduser() for p in braceexpand(source)]
        except ValueError as exc:  # UnbalancedBracesError
            raise DataError(f"not a shard pattern: {exc}", source=source) from None
        index = None
    else:
        paths, index = [path], None
    missing = [p for p in paths if not p.is_file()]
    if missing:
        of = f" ({len(missing)} of {len(paths)} shards are missing)" if len(paths) > 1 else ""
        raise DataError(f"shard {str(missing[0])!r} does not exist{of}", source=source)
    return paths, index


def _read_index(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(
            f"expected a shards folder with a {INDEX} (written last by `omnibind shards`), found none; "
            "an unfinished write leaves none",
            source=str(path.parent),
        )
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        ok = index["format"] == FORMAT and isinstance(index["shards"], list)
        names = [str(s["name"]) for s in index["shards"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"not a {FORMAT} index ({exc!r})", source=str(path)) from None
    if not ok or any("/" in n or n.startswith(".") for n in names):
        raise DataError(f"not a {FORMAT} index", source=str(path))
    if index.get("version", 0) > VERSION:
        raise DataError(
            f"written by a newer omnibind (version {index['version']}; this one reads {VERSION})",
            source=str(path),
        )
    return index


def load_shards(source: str, modalities: list[str] | None = None, on_error: str = "stop") -> LoadedData:
    """Records of the shards of ``source`` (a folder with ``shards.json``, a ``.tar`` or a brace pattern).

    Only headers and ``KEY.json`` members are read; each present modality's value is a
    :class:`ShardMember`. ``Record.source`` is the shard, ``Record.line`` the sample's 1-based position in
    it. With ``modalities`` the records keep the declared modalities only (like a built-in source: a
    shard set can serve configs that use part of it), and those with none of them are left out.

    Args:
        source: the shards.
        modalities: the declared modality names, or ``None`` for all.
        on_error: ``skip`` leaves out samples whose ``KEY.json`` is malformed or that have no modality
            (listed in ``LoadedData.skipped``); ``stop`` raises the first.

    Raises:
        DataError: a missing, truncated or corrupt shard (named), a count that differs from
            ``shards.json``, a duplicate id, or no declared modality in any sample.
    """
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    paths, index = shard_paths(source)
    records: list[Record] = []
    skipped: list[DataError] = []
    first: dict[str, str] = {}
    seen: dict[str, None] = {}
    for i, path in enumerate(paths):
        samples = _scan(path)
        if index is not None and len(samples) != index["shards"][i].get("samples", len(samples)):
            raise DataError(
                f"the shard has {len(samples)} samples, {INDEX} says {index['shards'][i]['samples']} "
                "(rewritten or truncated since it was written)",
                source=str(path),
            )
        for line, (key, (meta, members)) in enumerate(samples.items(), start=1):
            try:
                rec = _record(path, line, key, meta, members)
            except DataError as exc:
                if on_error == "stop":
                    raise
                skipped.append(exc)
                continue
            if rec.id in first:
                raise DataError(
                    f"duplicate id {rec.id!r}: already used at {first[rec.id]}; ids must be unique",
                    source=str(path),
                    line=line,
                    record_id=rec.id,
                    modality="id",
                )
            first[rec.id] = f"{path.name}:{line}"
            seen.update(dict.fromkeys(rec.values))
            if modalities is not None:
                rec.values = {k: v for k, v in rec.values.items() if k in modalities}
                if not rec.values:
                    continue
            records.append(rec)
    if modalities is not None and not records and seen:
        wanted = ", ".join(modalities) or "none"
        hint = nearest(modalities[0], list(seen)) if modalities else ""
        raise DataError(
            f"no sample has a declared modality ({wanted}){hint}; the shards hold: {', '.join(seen)}",
            source=source,
        )
    name = Path(source.rstrip("/")).name
    info = {"shards": [str(p) for p in paths], "modalities": list(seen)}
    if index is not None:
        info["written_from"] = index.get("source")
    return LoadedData(records=records, name=name, info=info, skipped=skipped)


_Sample = tuple[bytes | None, dict[str, ShardMember]]


def _scan(path: Path) -> dict[str, _Sample]:
    """Per key, in shard order: the ``KEY.json`` bytes (or None) and the modality members.

    Raises:
        DataError: not a tar, a corrupt header, a member or the end-of-archive marker past the end.
    """
    shard = path.resolve()
    size = shard.stat().st_size
    samples: dict[str, _Sample] = {}
    try:
        with open(shard, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for info in tar:  # reads headers only; tarfile seeks past each member's data
                if not info.isfile():
                    continue
                if info.offset_data + info.size > size:
                    raise tarfile.ReadError(f"member {info.name!r} runs past the end of the file")
                match = _MEMBER.match(info.name)
                if match is None:
                    continue  # no key.extension: not part of a sample
                key, field = match.groups()
                _, members = samples.setdefault(key, (None, {}))
                if field == "json":
                    handle = tar.extractfile(info)
                    samples[key] = (handle.read() if handle else b"", members)
                    continue
                modality = field.split(".", 1)[0]
                if modality in members:
                    raise DataError(
                        f"key {key!r} has two members for modality '{modality}': "
                        f"{members[modality].name!r} and {info.name!r}",
                        source=str(path),
                    )
                members[modality] = ShardMember(shard, key, info.name, info.offset_data, info.size)
            end = tar.offset  # where tarfile stopped: the end-of-archive marker (zero blocks)
        with open(shard, "rb") as f:
            f.seek(end)
            marker = f.read(tarfile.BLOCKSIZE)
    except (tarfile.TarError, EOFError) as exc:
        raise DataError(f"not a readable tar shard, corrupt or truncated ({exc})", source=str(path)) from None
    if len(marker) < tarfile.BLOCKSIZE or marker.strip(b"\0"):
        raise DataError(
            f"the tar shard is truncated or corrupt: no end-of-archive marker at byte {end} of {size} "
            f"(after {len(samples)} sample{'s' if len(samples) != 1 else ''})",
            source=str(path),
        )
    return samples


def _record(path: Path, line: int, key: str, meta: bytes | None, members: dict[str, ShardMember]) -> Record:
    def fail(message: str) -> DataError:
        return DataError(f"key {key!r}: {message}", source=str(path), line=line, record_id=key)

    info: dict[str, Any] = {}
    if meta is not None:
        try:
            info = json.loads(meta.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise fail(f"member '{key}.json' is not JSON ({exc})") from None
        if not isinstance(info, dict):
            raise fail(f"member '{key}.json' is not a JSON object")
    if not members:
        raise fail("the sample has no modality member")
    if "id" not in info:  # a foreign shard's KEY.json (img2dataset's, ...) is metadata
        info = {"id": key, "metadata": info}
    metadata = info.get("metadata") or {}
    split = info.get("split")
    return Record(
        id=str(info["id"]),
        values=dict(members),
        label=info.get("label"),
        split=None if split is None else str(split),
        facts=info.get("facts"),
        metadata=metadata if isinstance(metadata, dict) else {"metadata": metadata},
        source=str(path),
        line=line,
    )
