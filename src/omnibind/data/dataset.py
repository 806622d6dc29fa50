"""Prepared datasets: every present value loaded and transformed once, so that a batch is an index gather.

``prepare_dataset`` turns records into a :class:`Dataset`; ``split_records`` divides records into
train / val / test; ``fit_kinds`` lets kinds with statistics (tabular) learn them on the training split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from omnibind.data.batch import Batch, BatchValue
from omnibind.data.kinds.base import ModalityKind
from omnibind.data.record import Record
from omnibind.data.sources import FactSpec
from omnibind.data.views import ViewPick, choose_view, value_views
from omnibind.errors import DataError
from omnibind.io import write_jsonl_atomic
from omnibind.registry import nearest

SPLITS = ("train", "val", "test")
Indices = Sequence[int] | Tensor | np.ndarray


def split_records(
    records: list[Record], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Record]]:
    """Divide records into ``train``, ``val`` and ``test``, keeping source order within each.

    A record's own ``split`` is used where set; the others are split at random (``numpy.default_rng(seed)``)
    with ``round(n * test_fraction)`` test and ``round(n * val_fraction)`` val items.

    Raises:
        DataError: a record's split is not train, val or test.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction > 1:
        raise ValueError(
            f"val_fraction and test_fraction must be >= 0 with a sum <= 1, got {val_fraction}, "
            f"{test_fraction}"
        )
    assigned: list[str | None] = []
    for r in records:
        if r.split is not None and r.split not in SPLITS:
            raise DataError(
                f"expected split to be one of {', '.join(SPLITS)}, "
                f"got {r.split!r}{nearest(r.split, list(SPLITS))}",
                source=r.source,
                line=r.line,
                record_id=r.id,
                modality="split",
            )
        assigned.append(r.split)
    free = [i for i, s in enumerate(assigned) if s is None]
    order = np.random.default_rng(seed).permutation(len(free))
    n_test = int(round(len(free) * test_fraction))
    n_val = int(round(len(free) * val_fraction))
    for rank, j in enumerate(order):
        assigned[free[j]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    out: dict[str, list[Record]] = {s: [] for s in SPLITS}
    for r, s in zip(records, assigned, strict=True):
        out[str(s)].append(r)
    return out


def located_error(exc: Exception, record: Record, modality: str | None) -> DataError:
    """``exc`` as a DataError that names the record's source, line, id and the field."""
    if isinstance(exc, DataError):
        reason = exc.reason
        modality = exc.modality or modality
    else:
        reason = str(exc) or type(exc).__name__
    return DataError(reason, source=record.source, line=record.line, record_id=record.id, modality=modality)


def _learns(kind: ModalityKind) -> bool:
    return type(kind).fit is not ModalityKind.fit


def fit_kinds(
    records: list[Record], kinds: dict[str, ModalityKind], on_error: str = "stop"
) -> list[DataError]:
    """Fit the kinds that learn statistics (tabular) on the raw values of ``records`` (the training split).

    With ``on_error="skip"`` a bad value is left out of the fit and its error returned (``prepare_dataset``
    reports the same record again when it drops it); with ``stop`` the first error is raised.
    """
    errors: list[DataError] = []
    for name, kind in kinds.items():
        if not _learns(kind):
            continue
        raws = []
        for r in records:
            if name not in r.values:
                continue
            try:
                raws.extend(kind.load(v, r.base_dir) for v in value_views(r.values[name], kind, name))
            except (ValueError, OSError) as exc:
                err = located_error(exc, r, name)
                if on_error == "stop":
                    raise err from None
                errors.append(err)
        kind.fit(raws)
    return errors


def check_fields(record: Record, kinds: dict[str, ModalityKind]) -> None:
    """Every field of ``record`` is a declared modality and it has at least one.

    Raises:
        DataError: naming the record and the field.
    """
    declared = list(kinds)
    for name in record.values:
        if name not in kinds:
            raise DataError(
                f"'{name}' is not a declared modality{nearest(name, declared)}; "
                f"declared: {', '.join(declared)}",
                source=record.source,
                line=record.line,
                record_id=record.id,
                modality=name,
            )
    if not record.values:
        raise DataError(
            f"expected at least one of the modalities {', '.join(declared)}, found none",
            source=record.source,
            line=record.line,
            record_id=record.id,
        )


def prepare_value(record: Record, name: str, kind: ModalityKind) -> Any:
    """The prepared value of ``record``'s ``name``: one value, or the list of a multi-valued modality.

    Raises:
        DataError: naming the record and the modality.
    """
    try:
        views = [kind.prepare(v, record.base_dir) for v in value_views(record.values[name], kind, name)]
    except (ValueError, OSError) as exc:  # DataError is a ValueError
        raise located_error(exc, record, name) from None
    return views if kind.multi else views[0]


def _prepare_record(record: Record, kinds: dict[str, ModalityKind]) -> dict[str, Any]:
    check_fields(record, kinds)
    return {name: prepare_value(record, name, kinds[name]) for name in record.values}


def prepare_dataset(
    records: list[Record],
    kinds: dict[str, ModalityKind],
    on_error: str = "stop",
    progress: bool = True,
    facts: dict[str, FactSpec] | None = None,
    source_name: str = "",
) -> tuple[Dataset, list[DataError]]:
    """Load and transform every present value of ``records``.

    Args:
        records: the items (usually one split).
        kinds: one kind per declared modality; its order is the column order of ``present``.
        on_error: ``stop`` raises the first bad record; ``skip`` drops it and returns its error.
        progress: show a progress bar.
        facts: which modalities carry each ground-truth fact (built-in sources).
        source_name: the source's short name (``LoadedData.name``), kept as ``Dataset.source_name``.

    Returns:
        the dataset and the errors of the records that were skipped.

    Raises:
        DataError: naming source, line, id and modality, when ``on_error`` is ``stop``.
    """
    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    from tqdm.auto import tqdm

    kept: list[Record] = []
    prepared: list[dict[str, Any]] = []
    errors: list[DataError] = []
    for record in tqdm(records, desc="preparing data", unit="item", disable=not progress, leave=False):
        try:
            prepared.append(_prepare_record(record, kinds))
        except DataError as exc:
            if on_error == "stop":
                raise
            errors.append(exc)
            continue
        kept.append(record)
    dataset = Dataset.from_prepared(kept, prepared, kinds, facts)
    dataset.source_name = source_name
    return dataset, errors


def record_skipped(path: str | Path, errors: list[DataError]) -> None:
    """Add ``errors`` to ``skipped.jsonl`` (atomically), keeping the lines already there, once each."""
    if not errors:
        return
    import json

    path = Path(path)
    lines = path.read_text().splitlines() if path.exists() else []
    seen = set(lines)
    for err in errors:
        line = json.dumps(err.to_json())
        if line not in seen:
            seen.add(line)
            lines.append(line)
    write_jsonl_atomic(path, [json.loads(line) for line in lines])


def write_skipped(path: str | Path, errors: list[DataError]) -> Path:
    """Write ``skipped.jsonl`` atomically: one ``DataError.to_json()`` object per line."""
    return write_jsonl_atomic(path, [e.to_json() for e in errors])


def _gather(values: BatchValue, rows: Tensor) -> BatchValue:
    if isinstance(values, list):
        return [values[i] for i in rows.tolist()]
    return values.index_select(0, rows)


def as_index(indices: Indices) -> Tensor:
    if isinstance(indices, Tensor):
        return indices.to(torch.long).reshape(-1)
    return torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))


class Dataset:
    """Prepared items: the values of each modality stacked once over the rows where it is present.

    Attributes:
        records: the items, in order.
        ids: their ids.
        modalities: the modality names; column ``m`` of ``present`` is ``modalities[m]``.
        values: per modality, the prepared values of its present rows only (``[n_m, ...]`` tensor, or a
            list of ``n_m`` strings for text), in item order.
        present: ``bool[N, M]``.
        row_of: per modality, ``long[N]``: the row of item ``i`` in ``values[m]``, or -1 where absent.
        labels: per-item labels (``None`` where unknown).
        facts: per-item ground-truth facts (``None`` where unknown).
        fact_specs: which modalities carry each fact (built-in sources), or ``None``.
        source_name: the short name of the source the items came from (``xor`` for ``builtin:xor``), or
            ``""``; evaluation adds source-specific measures by it.
        view_count: per multi-valued modality, ``long[N]``: how many values item ``i`` has (0 where
            absent); its values are the rows ``row_of[m][i] .. row_of[m][i] + view_count[m][i] - 1`` of
            ``values[m]``. Single-valued modalities have no entry.
    """

    def __init__(
        self,
        records: list[Record],
        modalities: tuple[str, ...],
        values: dict[str, BatchValue],
        present: Tensor,
        row_of: dict[str, Tensor],
        fact_specs: dict[str, FactSpec] | None = None,
        source_name: str = "",
        view_count: dict[str, Tensor] | None = None,
    ) -> None:
        self.records = records
        self.ids = [r.id for r in records]
        self.modalities = modalities
        self.values = values
        self.present = present
        self.row_of = row_of
        self.labels: list[Any] = [r.label for r in records]
        self.facts: list[dict[str, Any] | None] = [r.facts for r in records]
        self.fact_specs = fact_specs
        self.source_name = source_name
        self.view_count = view_count or {}
        self._value_keys: dict[str, list[Hashable | None]] | None = None

    @classmethod
    def from_prepared(
        cls,
        records: list[Record],
        prepared: list[dict[str, Any]],
        kinds: dict[str, ModalityKind],
        fact_specs: dict[str, FactSpec] | None = None,
    ) -> Dataset:
        """Stack per-item prepared values (``prepared[i][modality]``) into a dataset."""
        modalities = tuple(kinds)
        n = len(records)
        present = torch.zeros(n, len(modalities), dtype=torch.bool)  # [N, M]
        values: dict[str, BatchValue] = {}
        row_of: dict[str, Tensor] = {}
        view_count: dict[str, Tensor] = {}
        for m, name in enumerate(modalities):
            kind = kinds[name]
            rows = torch.full((n,), -1, dtype=torch.long)
            if kind.multi:  # the views of an item are consecutive rows; row_of is its first
                counts = torch.tensor([len(p.get(name, ())) for p in prepared], dtype=torch.long)
                where = torch.nonzero(counts).squeeze(1)
                starts = torch.cumsum(counts, 0) - counts  # [N]
                rows[where] = starts[where]
                view_count[name] = counts
                items = [(i, v) for i, p in enumerate(prepared) for v in p.get(name, ())]
            else:
                items = [(i, p[name]) for i, p in enumerate(prepared) if name in p]
                where = torch.tensor([i for i, _ in items], dtype=torch.long)
                rows[where] = torch.arange(len(items))
            present[where, m] = True
            row_of[name] = rows
            if items:
                values[name] = kind.collate([x for _, x in items])
            else:
                empty = kind.collate([]) if kind.input_shape() == () else torch.zeros(0, *kind.input_shape())
                values[name] = empty
        return cls(records, modalities, values, present, row_of, fact_specs, view_count=view_count)

    def __len__(self) -> int:
        return len(self.records)

    def value_keys(self) -> dict[str, list[Hashable | None]]:
        """Per modality, a key per item that is equal for two items iff their prepared values are identical
        (``None`` where absent): text by its string, tensors by a digest of their bytes.

        Evaluation uses it to count a target identical to the query item's own as equally correct (an
        encoder cannot rank two identical inputs apart). Computed once and cached.
        """
        if self._value_keys is None:
            keys: dict[str, list[Hashable | None]] = {}
            for name in self.modalities:
                values = self.values[name]
                if isinstance(values, list):
                    per_row: list[Hashable] = list(values)
                else:
                    flat = values.detach().cpu().contiguous().reshape(len(values), -1).numpy()
                    per_row = [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]
                rows = self.row_of[name].tolist()
                keys[name] = [per_row[r] if r >= 0 else None for r in rows]
            self._value_keys = keys
        return self._value_keys

    def batch(self, indices: Indices, pick: ViewPick | None = None) -> Batch:
        """The items at ``indices`` as a :class:`Batch` (values of present rows only, in batch order).

        ``pick`` says which values of a multi-valued modality the batch holds (default: the first).
        """
        idx = as_index(indices)  # [B]
        pos = idx.tolist()
        rows_of: dict[str, Tensor] = {}  # per modality, the row in values of each present item
        extra: list[tuple[str, int, int]] = []  # ``all``: (modality, position of the owner, row)
        for name in self.modalities:
            rows = self.row_of[name].index_select(0, idx)
            if name in self.view_count and pick is not None and pick.mode != "first":
                counts = self.view_count[name].index_select(0, idx).tolist()
                if pick.mode == "sample":
                    offset = [
                        choose_view(pick.seed, pick.epoch, self.ids[i], c)
                        for i, c in zip(pos, counts, strict=True)
                    ]
                    rows = rows + torch.tensor(offset, dtype=torch.long)
                else:
                    start = rows.tolist()
                    extra += [(name, b, start[b] + k) for b, c in enumerate(counts) for k in range(1, c)]
            rows_of[name] = rows[rows >= 0]  # [n_m] rows of values[name]
        present = self.present.index_select(0, idx)
        owners = torch.tensor([b for _, b, _ in extra], dtype=torch.long)  # [V]
        if extra:  # each extra view is a row of its own after the items, present in its modality only
            more = torch.zeros(len(extra), len(self.modalities), dtype=torch.bool)
            for v, (name, _, _) in enumerate(extra):
                more[v, self.modalities.index(name)] = True
            present = torch.cat([present, more])
            for name in {name for name, _, _ in extra}:
                added = torch.tensor([row for m, _, row in extra if m == name], dtype=torch.long)
                rows_of[name] = torch.cat([rows_of[name], added])
            pos = pos + [pos[b] for b in owners.tolist()]
        values: dict[str, BatchValue] = {}
        for name, rows in rows_of.items():
            if rows.numel():
                values[name] = _gather(self.values[name], rows)
        labels = [self.labels[i] for i in pos]
        facts = [self.facts[i] for i in pos]
        items = torch.tensor(pos, dtype=torch.long) if extra else idx
        return Batch(
            ids=[self.ids[i] for i in pos],
            modalities=self.modalities,
            values=values,
            present=present,
            labels=labels if any(x is not None for x in labels) else None,
            facts=facts if any(f is not None for f in facts) else None,
            metadata=[self.records[i].metadata for i in pos],
            items=items,
            groups=items if extra else None,
        )

    def views(self, name: str) -> tuple[BatchValue, Tensor]:
        """Every value of multi-valued ``name`` but each item's first, and the item each belongs to.

        Returns:
            ``(values, owner)``: the values (as ``values[name]``) and ``long[V]`` item indices.
        """
        counts = self.view_count[name]
        rows, owner = [], []
        for i, (start, c) in enumerate(zip(self.row_of[name].tolist(), counts.tolist(), strict=True)):
            rows += range(start + 1, start + c)
            owner += [i] * (c - 1)
        return _gather(self.values[name], torch.tensor(rows, dtype=torch.long)), torch.tensor(
            owner, dtype=torch.long
        )

    def subset(self, indices: Indices) -> Dataset:
        """A dataset of the items at ``indices`` (values gathered, not reloaded)."""
        idx = as_index(indices)
        values: dict[str, BatchValue] = {}
        row_of: dict[str, Tensor] = {}
        view_count: dict[str, Tensor] = {}
        for name in self.modalities:
            old = self.row_of[name].index_select(0, idx)  # [n]
            keep = old >= 0
            rows = torch.full((len(idx),), -1, dtype=torch.long)
            if name in self.view_count:  # every view of the kept items, consecutive again
                counts = self.view_count[name].index_select(0, idx)
                spans = zip(old.tolist(), counts.tolist(), strict=True)
                picked = [r for s, c in spans for r in range(s, s + c)]
                values[name] = _gather(self.values[name], torch.tensor(picked, dtype=torch.long))
                rows[keep] = (torch.cumsum(counts, 0) - counts)[keep]
                view_count[name] = counts
            else:
                values[name] = _gather(self.values[name], old[keep])
                rows[keep] = torch.arange(int(keep.sum()))
            row_of[name] = rows
        records = [self.records[i] for i in idx.tolist()]
        present = self.present.index_select(0, idx)
        return Dataset(
            records, self.modalities, values, present, row_of, self.fact_specs, self.source_name, view_count
        )

    def iter_batches(self, batch_size: int) -> Iterator[Batch]:
        """Consecutive batches of ``batch_size`` items in dataset order (the last one may be smaller)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        for start in range(0, len(self), batch_size):
            yield self.batch(torch.arange(start, min(start + batch_size, len(self))))


def concat_datasets(datasets: list[Dataset]) -> Dataset:
    """One dataset of the items of several (same modalities), in order."""
    if not datasets:
        raise ValueError("concat_datasets needs at least one dataset")
    first = datasets[0]
    values: dict[str, BatchValue] = {}
    row_of: dict[str, Tensor] = {}
    for name in first.modalities:
        parts = [d.values[name] for d in datasets]
        if isinstance(parts[0], list):
            values[name] = [v for p in parts for v in p]  # type: ignore[union-attr]
        else:
            values[name] = torch.cat(parts)  # type: ignore[arg-type]
        offset, rows = 0, []
        for d in datasets:
            r = d.row_of[name].clone()
            r[r >= 0] += offset
            offset += len(d.values[name])  # every value row, the further views of multi-valued items too
            rows.append(r)
        row_of[name] = torch.cat(rows)
    view_count = {name: torch.cat([d.view_count[name] for d in datasets]) for name in first.view_count}
    records = [r for d in datasets for r in d.records]
    present = torch.cat([d.present for d in datasets])
    return Dataset(
        records, first.modalities, values, present, row_of, first.fact_specs, first.source_name, view_count
    )
