"""Record: one item of paired data, with any subset of its modalities present."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Record:
    """One example.

    Attributes:
        id: unique identifier of the item (a string).
        values: the value of every *present* modality, keyed by modality name. A value is what the manifest
            holds (a file path relative to ``base_dir``, inline text, a list of numbers, a dict of named
            numbers) or an in-memory array made by a generator. Absent modalities have no key.
        label: optional class label.
        split: ``train`` / ``val`` / ``test`` when the source says so.
        facts: ground-truth facts (built-in generators), used to decide which retrieval results are relevant.
        metadata: any other columns of the manifest row.
        source: where the record came from (manifest path or ``builtin:NAME``), for error messages.
        line: 1-based line or row number in ``source``.
        base_dir: folder that relative file paths are resolved against.
        negatives: ids of the item's hard negatives (the manifest's ``negatives`` column), or ``None``;
            training adds them to the candidates of the item's batches (``omnibind.data.negatives``).
    """

    id: str
    values: dict[str, Any]
    label: Any = None
    split: str | None = None
    facts: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    line: int | None = None
    base_dir: Path | None = None
    negatives: list[str] | None = None
