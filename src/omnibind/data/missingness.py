"""Missingness chosen by the experimenter: remove a modality from a share of the items, at random or by class.

``data.missing`` (see :class:`~omnibind.config.MissingConfig`) lists modalities to remove after the data
is loaded and split. With a ``value``, only items whose ``field`` (the label, a fact, a column) equals it
lose the modality: missing *not at random* (MNAR), as in MultiModN's experiment where chest X-ray features
are missing mostly for one diagnosis. A model trained that way can learn "missing means class c"; the
robustness evaluation (``omnibind.evaluation.robustness.mnar_test``) then moves the missingness to another
class at test time and measures what that shortcut costs.

Rules, all deterministic for ``data.split_seed``:

- candidates are the matching items of the entry's splits that have the modality *and* at least one
  other: an item with nothing left is not an item (the dataset layer rejects it), so a sole modality is
  never removed;
- exactly ``round(rate * candidates)`` of them lose the modality, drawn without replacement, separately
  per split and per entry (entries apply in order, so a later entry sees the earlier removals);
- records are copied, never changed in place.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from omnibind.config import MissingConfig
from omnibind.data.record import Record

_SPLITS = ("train", "val", "test")


def field_value(record: Record, name: str) -> str | None:
    """The value of ``name`` for a record as a string, read as ``task.label`` reads it.

    ``label`` is the record's label; another name is a fact, else a manifest column; ``a+b`` joins several
    as ``"a=..,b=.."``. ``None`` when the record has no such value.
    """
    names = [n.strip() for n in name.split("+")]
    values = [_one(record, n) for n in names]
    if any(v is None for v in values):
        return None
    if len(names) == 1:
        return str(values[0])
    return ",".join(f"{n}={v}" for n, v in zip(names, values, strict=True))


def _one(record: Record, name: str) -> Any:
    if name == "label":
        return record.label
    if record.facts and name in record.facts:
        return record.facts[name]
    return record.metadata.get(name)


def apply_missing(
    by_split: dict[str, list[Record]], missing: list[MissingConfig], seed: int
) -> dict[str, list[Record]]:
    """Remove modalities from items as ``missing`` says (see the module docs for the rules).

    Args:
        by_split: records per split (``split_records``'s output).
        missing: the ``data.missing`` entries.
        seed: ``data.split_seed``.

    Returns:
        a new ``{split: records}``; records that lose a modality are copies without its value.
    """
    out = {split: list(records) for split, records in by_split.items()}
    for e, entry in enumerate(missing):
        for split in entry.splits:
            records = out.get(split)
            if not records:
                continue
            chosen = choose_missing(records, entry, np.random.SeedSequence([seed, e, _SPLITS.index(split)]))
            for i in chosen:
                r = records[i]
                records[i] = dataclasses.replace(
                    r, values={k: v for k, v in r.values.items() if k != entry.modality}
                )
    return out


def choose_missing(
    records: list[Record], entry: MissingConfig, seed: np.random.SeedSequence | int
) -> list[int]:
    """Indices of the records that lose ``entry.modality`` (sorted): ``round(rate * candidates)`` of them.

    Candidates are the records whose ``entry.field`` equals ``entry.value`` (every record when ``value`` is
    empty) and that have ``entry.modality`` and at least one other modality.
    """
    candidates = [
        i
        for i, r in enumerate(records)
        if entry.modality in r.values
        and len(r.values) > 1
        and (not entry.value or field_value(r, entry.field) == entry.value)
    ]
    k = int(round(entry.rate * len(candidates)))
    if k == 0:
        return []
    picked = np.random.default_rng(seed).choice(len(candidates), size=k, replace=False)
    return sorted(candidates[j] for j in picked.tolist())
