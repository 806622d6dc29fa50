"""Data that does not fit in RAM: values decoded when a batch needs them, in DataLoader workers.

Three pieces, chosen by ``data.validate``, ``data.cache`` and ``train.workers``:

- :func:`validate_records` checks every record before training, streaming (nothing is held): ``full``
  decodes every value, ``structure`` checks ids, fields, that files exist and their headers. A bad
  record stops the run before anything is written (or is skipped with ``on_error: skip``).
- :class:`LazyDataset` has the interface of :class:`~omnibind.data.dataset.Dataset` that training
  needs (``batch(indices)``, ``present``, ``ids``) but decodes the values of a batch when it is asked
  for; with a :class:`DiskCache` each prepared tensor is written once into a memory-mapped file, and
  later epochs (and later runs) read it from there.
- :class:`StepBatches` makes item ``s`` the batch of training step ``s``, so a ``DataLoader`` with
  worker processes prepares the next batches while the model trains, in the order the epoch
  permutation of ``(seed, epoch)`` says: the order, and so an exact resume, do not depend on the
  number of workers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from omnibind.data.batch import Batch, BatchValue
from omnibind.data.dataset import Dataset, Indices, as_index, check_fields, located_error, prepare_value
from omnibind.data.kinds.base import ModalityKind
from omnibind.data.negatives import NegativeTable
from omnibind.data.record import Record
from omnibind.data.shards import ShardMember
from omnibind.data.sources import FactSpec
from omnibind.data.views import ViewPick, choose_view, value_views
from omnibind.errors import ConfigError, DataError
from omnibind.io import write_text_atomic

# Below this many items the defaults are today's in-memory path and full validation.
AUTO_LIMIT = 100_000
CACHE_VERSION = 1


def epoch_order(seed: int, epoch: int, size: int) -> Tensor:
    """The item order of one epoch: a permutation that depends only on ``(seed, epoch)``."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(size, generator=gen)


def resolve_validate(mode: str, num_items: int) -> str:
    """``full`` or ``structure``: ``auto`` is ``full`` below :data:`AUTO_LIMIT` items."""
    if mode == "auto":
        return "full" if num_items < AUTO_LIMIT else "structure"
    return mode


def resolve_cache(mode: str, num_items: int) -> str:
    """``memory``, ``none`` or a folder: ``auto`` is ``memory`` below :data:`AUTO_LIMIT` items."""
    if mode == "auto":
        return "memory" if num_items < AUTO_LIMIT else "none"
    return mode


def _stamp(value: Any, base_dir: Path | None) -> str:
    """What identifies a value's content cheaply: a file's size and modification time, else the value."""
    if isinstance(value, ShardMember):
        st = value.shard.stat()
        return f"{value.shard}:{value.offset}:{value.size}:{st.st_mtime_ns}"
    if isinstance(value, (str, Path)):
        path = Path(value) if base_dir is None else Path(base_dir) / value
        try:
            st = path.stat()
        except OSError:
            return f"text:{value}"
        return f"{path}:{st.st_size}:{st.st_mtime_ns}"
    if isinstance(value, np.ndarray):
        return hashlib.blake2b(np.ascontiguousarray(value).tobytes(), digest_size=16).hexdigest()
    return repr(value)


def validate_records(
    records: list[Record],
    kinds: dict[str, ModalityKind],
    mode: str,
    on_error: str = "stop",
    progress: bool = True,
) -> tuple[list[Record], list[DataError], str]:
    """Check every record, streaming: ``full`` decodes each value, ``structure`` only checks it.

    Returns:
        the records that passed, the errors of the skipped ones (``on_error: skip``), and a digest of
        the ids and of the values' content stamps (file size and modification time), which tells a disk
        cache whether its source changed.

    Raises:
        DataError: naming source, line, id and field, with ``on_error: stop``.
    """
    if mode not in ("full", "structure"):
        raise ValueError(f"mode must be 'full' or 'structure', got {mode!r}")
    from tqdm.auto import tqdm

    kept: list[Record] = []
    errors: list[DataError] = []
    digest = hashlib.blake2b(digest_size=16)
    for record in tqdm(
        records, desc=f"checking data ({mode})", unit="item", disable=not progress, leave=False
    ):
        try:
            check_fields(record, kinds)
            for name, value in record.values.items():
                try:
                    for view in value_views(value, kinds[name], name):
                        if mode == "full":
                            kinds[name].prepare(view, record.base_dir)
                        else:
                            kinds[name].check(view, record.base_dir)
                except (ValueError, OSError) as exc:
                    raise located_error(exc, record, name) from None
        except DataError as exc:
            if on_error == "stop":
                raise
            errors.append(exc)
            continue
        kept.append(record)
        digest.update(record.id.encode() + b"\0")
        for name in sorted(record.values):
            digest.update(f"{name}={_stamp(record.values[name], record.base_dir)}\0".encode())
    return kept, errors, digest.hexdigest()


class DiskCache:
    """Prepared tensors of one split in memory-mapped files: ``DIR/<modality>.npy`` ``[N, *shape]`` and
    ``DIR/<modality>.filled`` (one byte per item), described by ``DIR/cache.json``.

    A row is written the first time an item is prepared (by whichever process prepares it) and marked
    filled after it; later reads come from the page cache. Text is not cached (it is its own value).
    ``cache.json`` records the source, the modality config (kinds, options, fitted statistics), the ids
    and a digest of the values' content stamps: another source or config is an error (the folder holds
    another run's cache); the same source with changed content invalidates the rows, which are prepared
    again.

    Args:
        root: the cache folder (created).
        ids: the split's item ids, in order.
        shapes: the shape of one row per cached modality (a kind's ``input_shape()``; an encoder's
            ``(output_dim,)`` for frozen features). Modalities without a shape (text) are not cached.
        identity: ``{"source": ..., "modalities": {...}}``: what the cache belongs to.
        content: the content digest of :func:`validate_records`.
    """

    def __init__(
        self,
        root: str | Path,
        ids: list[str],
        shapes: dict[str, tuple[int, ...]],
        identity: dict[str, Any],
        content: str,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.shapes = {m: tuple(shape) for m, shape in shapes.items() if shape}
        ids_digest = hashlib.blake2b("\0".join(ids).encode(), digest_size=16).hexdigest()
        meta = {"version": CACHE_VERSION, **identity, "items": len(ids), "ids": ids_digest}
        self._n = len(ids)
        self._arrays: dict[str, np.memmap] = {}
        self._filled: dict[str, np.memmap] = {}
        with _exclusive(self.root / ".lock"):  # ranks sharing the folder: one creates, the others open
            path = self.root / "cache.json"
            fresh = True
            if path.exists():
                old = json.loads(path.read_text())
                mismatch = describe_mismatch(old, meta)
                if mismatch:
                    raise ConfigError(
                        f"data.cache {self.root} holds the cache of another source or config ({mismatch}); "
                        "choose another folder or delete this one"
                    )
                fresh = old.get("content") != content
            self.invalidated = fresh and path.exists()
            if fresh:  # new, or the source's content changed: every row is prepared again
                for name, shape in self.shapes.items():
                    for old_file in (self._file(name), self.root / f"{name}.filled"):
                        old_file.unlink(missing_ok=True)  # a new file: maps other processes hold stay valid
                    np.lib.format.open_memmap(
                        self._file(name), mode="w+", dtype=np.float32, shape=(self._n, *shape)
                    )
                    np.memmap(
                        self.root / f"{name}.filled", dtype=np.uint8, mode="w+", shape=(self._n,)
                    ).flush()
                write_text_atomic(path, json.dumps({**meta, "content": content}, indent=1))

    def _file(self, name: str) -> Path:
        return self.root / f"{name}.npy"

    def _open(self, name: str) -> tuple[np.memmap, np.memmap]:
        if name not in self._arrays:  # opened lazily: in each worker process after it starts
            self._arrays[name] = np.load(self._file(name), mmap_mode="r+")
            self._filled[name] = np.memmap(
                self.root / f"{name}.filled", dtype=np.uint8, mode="r+", shape=(self._n,)
            )
        return self._arrays[name], self._filled[name]

    def get(self, name: str, item: int) -> Tensor | None:
        """The cached tensor of ``item``'s ``name`` value, or ``None`` (not cached yet, or text)."""
        if name not in self.shapes:
            return None
        array, filled = self._open(name)
        if not filled[item]:
            return None
        return torch.from_numpy(np.array(array[item]))

    def put(self, name: str, item: int, value: Any) -> None:
        """Write ``item``'s prepared tensor (then mark it filled)."""
        if name not in self.shapes or not isinstance(value, Tensor):
            return
        array, filled = self._open(name)
        array[item] = value.detach().cpu().numpy()
        filled[item] = 1

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"], state["_filled"] = {}, {}  # maps are reopened in the worker process
        return state


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``lock`` (POSIX ``flock``; no lock where there is none)."""
    try:
        import fcntl
    except ImportError:  # Windows: one process per cache folder
        yield
        return
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def describe_mismatch(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``""`` when ``old`` has ``new``'s values, else which keys differ and how the first one does (the
    message of a cache or parts folder that belongs to another run)."""
    differs = [k for k in new if old.get(k) != new[k]]
    if not differs:
        return ""
    a, b = json.dumps(old.get(differs[0]), default=str)[:80], json.dumps(new[differs[0]], default=str)[:80]
    return f"differs in {', '.join(differs)}: {differs[0]} was {a}, now {b}"


class LazyDataset:
    """Training items whose values are decoded when a batch asks for them (``data.cache`` not memory).

    ``present`` is known from the records' fields (nothing decoded). A value that fails to decode
    follows ``on_error``: ``stop`` raises its :class:`~omnibind.errors.DataError`; ``skip`` makes the
    value absent in that batch and records the error in ``Batch.skipped``.

    Args:
        records: the split's records (already validated).
        kinds: the modality kinds (fitted).
        on_error: ``stop`` or ``skip``.
        cache: a :class:`DiskCache` of prepared tensors, or ``None``.
        fact_specs: as :class:`Dataset`.
        source_name: as :class:`Dataset`.
        content: the content digest of :func:`validate_records` (a frozen-feature cache keys on it).
    """

    def __init__(
        self,
        records: list[Record],
        kinds: dict[str, ModalityKind],
        on_error: str = "stop",
        cache: DiskCache | None = None,
        fact_specs: dict[str, FactSpec] | None = None,
        source_name: str = "",
        content: str = "",
    ) -> None:
        self.records = records
        self.kinds = kinds
        self.on_error = on_error
        self.cache = cache
        self.ids = [r.id for r in records]
        self.modalities = tuple(kinds)
        self.present = torch.tensor(
            [[m in r.values for m in self.modalities] for r in records], dtype=torch.bool
        ).reshape(len(records), len(self.modalities))
        self.fact_specs = fact_specs
        self.source_name = source_name
        self.content = content

    def __len__(self) -> int:
        return len(self.records)

    def _value(self, item: int, name: str) -> Any:
        if self.cache is not None:
            cached = self.cache.get(name, item)
            if cached is not None:
                return cached
        value = prepare_value(self.records[item], name, self.kinds[name])  # a list if multi-valued
        if self.cache is not None:
            self.cache.put(name, item, value)
        return value

    def batch(self, indices: Indices, pick: ViewPick | None = None) -> Batch:
        """The items at ``indices``, decoded now (or read from the cache), as a :class:`Batch`.

        ``pick`` says which values of a multi-valued modality the batch holds, as
        :meth:`Dataset.batch <omnibind.data.dataset.Dataset.batch>` (default: the first).
        """
        idx = as_index(indices)
        pos = idx.tolist()
        present = self.present.index_select(0, idx).clone()
        parts: dict[str, list[Any]] = {m: [] for m in self.modalities}
        extra: list[tuple[int, int, Any]] = []  # ``all``: (modality column, position of the owner, value)
        mode = "first" if pick is None else pick.mode
        skipped: list[DataError] = []
        for row, item in enumerate(pos):
            for m, name in enumerate(self.modalities):
                if not present[row, m]:
                    continue
                try:
                    value = self._value(item, name)
                except DataError as exc:
                    if self.on_error == "stop":
                        raise
                    present[row, m] = False  # the bad value is left out of this batch
                    skipped.append(exc)
                    continue
                if self.kinds[name].multi:
                    if mode == "sample" and pick is not None:
                        k = choose_view(pick.seed, pick.epoch, self.ids[item], len(value))
                        value, rest = value[k], []
                    else:
                        value, rest = value[0], value[1:] if mode == "all" else []
                    extra += [(m, row, v) for v in rest]
                parts[name].append(value)
        for m, _, value in extra:  # each extra view is a row of its own after the items
            parts[self.modalities[m]].append(value)
        if extra:
            more = torch.zeros(len(extra), len(self.modalities), dtype=torch.bool)
            more[torch.arange(len(extra)), torch.tensor([m for m, _, _ in extra])] = True
            present = torch.cat([present, more])
            pos = pos + [pos[row] for _, row, _ in extra]
        values: dict[str, BatchValue] = {
            name: self.kinds[name].collate(items) for name, items in parts.items() if items
        }
        labels = [self.records[i].label for i in pos]
        facts = [self.records[i].facts for i in pos]
        items = torch.tensor(pos, dtype=torch.long) if extra else idx
        return Batch(
            ids=[self.ids[i] for i in pos],
            modalities=self.modalities,
            values=values,
            present=present,
            labels=labels if any(x is not None for x in labels) else None,
            facts=facts if any(f is not None for f in facts) else None,
            metadata=[self.records[i].metadata for i in pos],
            skipped=skipped,
            items=items,
            groups=items if extra else None,
        )


TrainData = Dataset | LazyDataset


class StepBatches(torch.utils.data.Dataset):
    """Item ``s`` is this rank's part of the batch of training step ``s``.

    The global batch of step ``s`` is ``epoch_order(seed, epoch)[i * B : (i + 1) * B]`` with
    ``epoch, i = divmod(s, steps_per_epoch)``; rank ``r`` of ``N`` takes its contiguous ``B / N``.
    ``views`` (a :class:`~omnibind.data.views.ViewPick` mode) says which values of a multi-valued modality
    the batch holds: ``sample`` depends on ``(seed, epoch, item id)`` only, so not on ``N``.
    ``negatives`` (a :class:`~omnibind.data.negatives.NegativeTable`) appends the hard negatives this
    rank encodes for the step to its batch (:attr:`~omnibind.data.batch.Batch.negatives` says so).
    """

    def __init__(
        self,
        data: TrainData,
        seed: int,
        batch_size: int,
        steps_per_epoch: int,
        total: int,
        rank: int = 0,
        world: int = 1,
        views: str = "first",
        negatives: NegativeTable | None = None,
    ) -> None:
        self.data = data
        self.views = views
        self.negatives = negatives
        self.total = total
        self.seed = seed
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.rank = rank
        self.world = world
        self._epoch: tuple[int, Tensor] | None = None

    def global_indices(self, step: int) -> Tensor:
        """The item indices of the whole (global) batch of step ``step``."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if self._epoch is None or self._epoch[0] != epoch:
            self._epoch = (epoch, epoch_order(self.seed, epoch, len(self.data)))
        return self._epoch[1][i * self.batch_size : (i + 1) * self.batch_size]

    def indices(self, step: int) -> Tensor:
        """The item indices of this rank's part of step ``step``."""
        chunk = self.global_indices(step)
        size = len(chunk) // self.world
        return chunk[self.rank * size : (self.rank + 1) * size]

    def __len__(self) -> int:
        return self.total  # the steps of the run; the sampler says which are still to come

    def __getitem__(self, step: int) -> Batch | DataError:
        try:
            pick = ViewPick(self.views, self.seed, step // self.steps_per_epoch)
            if self.negatives is None:
                return self.data.batch(self.indices(step), pick)
            extra, rows = self.negatives.step(self.global_indices(step), self.rank, self.world)
            batch = self.data.batch(torch.cat([self.indices(step), extra]), pick)
            batch.negatives = rows
            return batch
        except DataError as exc:  # handed to the trainer as a value: it raises it with its fields intact
            return exc


def check_picklable(kinds: dict[str, ModalityKind]) -> None:
    """Refuse ``train.workers`` with a kind that cannot be sent to a worker process."""
    for name, kind in kinds.items():
        try:
            pickle.dumps(kind)
        except Exception as exc:  # noqa: BLE001 - any pickling failure is the same user error
            raise ConfigError(
                f"train.workers: modality '{name}' (kind '{type(kind).__name__}') cannot be pickled for the "
                f"DataLoader worker processes ({type(exc).__name__}: {exc}); set train.workers: 0, or keep "
                "the kind's state picklable (no open files, locks or lambdas)"
            ) from None


def step_loader(
    steps: StepBatches, start: int, total: int, workers: int, pin_memory: bool
) -> torch.utils.data.DataLoader:
    """A DataLoader over the steps ``start .. total - 1`` in order: ``workers`` processes (spawned, so
    they work the same on every OS), persistent, each prefetching 2 batches; pinned memory on CUDA."""
    extra: dict[str, Any] = {}
    if workers:
        import multiprocessing

        extra = {
            "persistent_workers": True,
            "prefetch_factor": 2,
            "multiprocessing_context": multiprocessing.get_context("spawn"),
        }
    return torch.utils.data.DataLoader(
        steps,
        batch_size=None,
        sampler=range(start, total),
        num_workers=workers,
        pin_memory=pin_memory,
        collate_fn=_identity,
        **extra,
    )


def _identity(item: Any) -> Any:
    return item


def cache_identity(source: str, modalities: dict[str, Any], split: str) -> dict[str, Any]:
    """What a disk cache belongs to: the source (as an absolute path where it is one), the split and
    the modality config (kinds, options, fitted statistics)."""
    where = source
    if not source.startswith("builtin:") and os.path.exists(source):
        where = str(Path(source).resolve())
    return {"source": where, "split": split, "modalities": modalities}
