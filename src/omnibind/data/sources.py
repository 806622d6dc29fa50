"""Resolve a data source string to records.

A source is a manifest path (JSONL, CSV, Parquet), WebDataset shards (a folder with ``shards.json``, a
``.tar`` or a brace pattern ``DIR/shard-{000000..000031}.tar``; see :mod:`omnibind.data.shards`) or
``builtin:NAME[?k=v&k2=v2]``. Built-in sources are functions registered in :data:`SOURCES`; each takes
keyword options (parsed from the query string, with ``root`` added when the loader needs a data folder)
and returns :class:`LoadedData`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import yaml

from omnibind.data.record import Record
from omnibind.errors import ConfigError, DataError
from omnibind.registry import Registry, nearest


@dataclass
class FactSpec:
    """Which modalities carry a ground-truth fact.

    Attributes:
        carriers: the modalities in which the fact can be read.
        joint: False if each carrier alone reveals the fact; True if only the combination of all
            carriers does (the fact's value then belongs to ``owner``, readable from the others jointly).
        owner: for joint facts, the modality whose own value the fact is.
    """

    carriers: list[str]
    joint: bool = False
    owner: str | None = None


@dataclass
class LoadedData:
    """Records plus what evaluation needs to know about them.

    Attributes:
        records: the items, in source order.
        facts: for built-in generators, which modalities carry each fact (``None``: every fact counts for
            every pair of modalities).
        name: a short human name of the source.
        info: source-specific details (class lists, sample rate, ...).
        skipped: manifest rows dropped while reading with ``on_error="skip"`` (no id, no modality, ...).
    """

    records: list[Record]
    facts: dict[str, FactSpec] | None = None
    name: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    skipped: list[DataError] = field(default_factory=list)


SourceFn = Callable[..., LoadedData]
SOURCES: Registry[SourceFn] = Registry("built-in data source")


def parse_source(source: str) -> tuple[str, dict[str, Any]]:
    """Split ``builtin:NAME?k=v&...`` into ``(NAME, {k: v})``, values parsed as YAML scalars."""
    body = source[len("builtin:") :]
    name, _, query = body.partition("?")
    opts = {k: yaml.safe_load(v) for k, v in parse_qsl(query, keep_blank_values=True)}
    return name, opts


def _keep_declared(records: list[Record], modalities: list[str]) -> list[Record]:
    """A built-in source makes every modality it knows; keep the declared ones (and the items that have one).

    Unlike a manifest, where an undeclared column is a mistake worth an error, a generator's extra
    modalities are a choice of the config: declaring three of shapes' four modalities is fine.
    """
    kept = []
    for rec in records:
        values = {k: v for k, v in rec.values.items() if k in modalities}
        if values:
            rec.values = values
            kept.append(rec)
    return kept


def load_source(
    source: str,
    root: str | None = None,
    modalities: list[str] | None = None,
    on_error: str = "stop",
    **extra: Any,
) -> LoadedData:
    """Load the records of ``source``: a built-in generator/loader, shards or a manifest path.

    Args:
        source: ``builtin:NAME[?k=v]``, shards (a folder with ``shards.json``, a ``.tar``, a brace
            pattern) or a path to a JSONL/CSV/Parquet manifest.
        root: data folder for loaders that need one.
        modalities: the declared modality names; a manifest column that is neither reserved nor declared
            is an error; built-in sources and shards keep the declared modalities.
        on_error: for a manifest or shards, ``"skip"`` drops rows that cannot be items (no id, no
            modality, ...) and lists them in ``LoadedData.skipped``; ``"stop"`` raises the first.
        extra: options that override the query-string options of a built-in source.
    """
    if source.startswith("builtin:"):
        import omnibind.data.avmnist  # noqa: F401  (registers the loaders)
        import omnibind.data.emoji  # noqa: F401
        import omnibind.data.synthetic  # noqa: F401

        name, opts = parse_source(source)
        opts.update(extra)
        fn = SOURCES.get(name)
        params = inspect.signature(fn).parameters
        if "root" in params:
            opts.setdefault("root", root)
        for key in opts:
            if key not in params:
                raise ConfigError(
                    f"builtin:{name} has no option '{key}'{nearest(key, list(params))}; "
                    f"options: {', '.join(params)}"
                )
        loaded = fn(**opts)
        if modalities is not None:
            loaded.records = _keep_declared(loaded.records, modalities)
        return loaded
    from omnibind.data.shards import is_shard_source, load_shards

    if is_shard_source(source):
        return load_shards(source, modalities, on_error)
    from omnibind.data.manifest import read_manifest_rows

    records, skipped = read_manifest_rows(Path(source), modalities, on_error)
    return LoadedData(records=records, name=Path(source).name, skipped=skipped)
