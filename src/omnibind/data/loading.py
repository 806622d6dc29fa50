"""From a run config to prepared datasets: load the source, split, fit kind statistics, prepare tensors.

This is the one path every command takes (train, eval, embed), so a bad record is reported the same
way everywhere and nothing is written before the data has been checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from omnibind.config import RunConfig
from omnibind.data.dataset import Dataset, fit_kinds, prepare_dataset, split_records, write_skipped
from omnibind.data.kinds import ModalityKind, create_kind
from omnibind.data.missingness import apply_missing
from omnibind.data.sources import FactSpec, LoadedData, load_source
from omnibind.data.streaming import (
    DiskCache,
    LazyDataset,
    cache_identity,
    resolve_cache,
    resolve_validate,
    validate_records,
)
from omnibind.errors import DataError


@dataclass
class Splits:
    """Prepared datasets by split name, and the rows that were skipped (``on_error: skip``)."""

    datasets: dict[str, Dataset]  # a streamed split is a LazyDataset
    skipped: list[DataError] = field(default_factory=list)
    facts: dict[str, FactSpec] | None = None
    source: str = ""


def build_kinds(cfg: RunConfig) -> dict[str, ModalityKind]:
    """One kind instance per declared modality, with fitted statistics restored from the config."""
    kinds = {}
    for name, spec in cfg.modalities.items():
        kind = create_kind(spec.kind, spec.options)
        kind.multi = spec.multi
        if spec.stats:
            kind.load_state(spec.stats)
        kinds[name] = kind
    return kinds


def load_data(cfg: RunConfig, source: str | None = None) -> LoadedData:
    """Load the records of ``source`` (default: ``cfg.data.source``)."""
    return load_source(
        source or cfg.data.source,
        root=cfg.data.root,
        modalities=list(cfg.modalities),
        on_error=cfg.data.on_error,
    )


def build_splits(
    cfg: RunConfig,
    kinds: dict[str, ModalityKind],
    wanted: tuple[str, ...] = ("train", "val", "test"),
    fit: bool | tuple[str, ...] = True,
    source: str | None = None,
    progress: bool = True,
    stream: tuple[str, ...] = (),
) -> Splits:
    """Load, split and prepare the data of a run.

    Args:
        cfg: the run config (``data`` section; ``data.missing`` removes modalities after the split).
        kinds: the modality kinds; with ``fit`` their statistics are fitted on the training split and
            written back into ``cfg.modalities[*].stats``.
        wanted: which splits to prepare.
        fit: fit kind statistics on the training split (training only; evaluation reuses saved ones);
            a tuple of modality names fits only those (the new modalities bound into a trained space).
        source: another data source than the config's.
        progress: show progress bars.
        stream: splits that may stream (training): unless ``data.cache`` resolves to ``memory`` they are
            validated as ``data.validate`` says and become a :class:`~omnibind.data.streaming.LazyDataset`.

    Raises:
        DataError: the first bad record, when ``cfg.data.on_error`` is ``stop``.
    """
    loaded = load_data(cfg, source)
    by_split = split_records(
        loaded.records, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed
    )
    if cfg.data.missing:  # experimenter-chosen missingness (MNAR studies), before anything is fitted
        by_split = apply_missing(by_split, cfg.data.missing, cfg.data.split_seed)
    if fit:
        chosen = kinds if fit is True else {m: k for m, k in kinds.items() if m in fit}
        fit_kinds(by_split.get("train", []), chosen, cfg.data.on_error)
        for name, kind in chosen.items():
            cfg.modalities[name].stats = kind.state()
    datasets: dict[str, Dataset] = {}
    skipped: list[DataError] = list(loaded.skipped)  # rows the manifest reader dropped
    for split in wanted:
        records = by_split.get(split, [])
        if not records:
            continue
        if split in stream and resolve_cache(cfg.data.cache, len(records)) != "memory":
            lazy, bad = _stream_split(cfg, kinds, split, records, loaded, progress)
            datasets[split] = lazy  # type: ignore[assignment]
            skipped.extend(bad)
            continue
        ds, bad = prepare_dataset(
            records,
            kinds,
            on_error=cfg.data.on_error,
            progress=progress,
            facts=loaded.facts,
            source_name=loaded.name,
        )
        datasets[split] = ds
        skipped.extend(bad)
    return Splits(datasets=datasets, skipped=skipped, facts=loaded.facts, source=loaded.name)


def _stream_split(
    cfg: RunConfig,
    kinds: dict[str, ModalityKind],
    split: str,
    records: list,
    loaded: LoadedData,
    progress: bool,
) -> tuple[LazyDataset, list[DataError]]:
    """Validate a split's records (streaming) and wrap them in a lazy dataset, cached on disk if asked."""
    mode = resolve_validate(cfg.data.validate, len(records))
    kept, bad, content = validate_records(records, kinds, mode, cfg.data.on_error, progress)
    cache = None
    where = resolve_cache(cfg.data.cache, len(records))
    if where != "none":
        modalities = {name: cfg.to_dict()["modalities"][name] for name in kinds}
        identity = cache_identity(cfg.data.source, modalities, split)
        # one row per item: a multi-valued modality (several values per item) is not cached
        shapes = {name: kind.input_shape() for name, kind in kinds.items() if not kind.multi}
        cache = DiskCache(Path(where) / split, [r.id for r in kept], shapes, identity, content)
        if cache.invalidated:
            import sys

            print(
                f"data.cache: the source changed since {where} was written; preparing it again",
                file=sys.stderr,
            )
    return LazyDataset(kept, kinds, cfg.data.on_error, cache, loaded.facts, loaded.name, content), bad


def save_skipped(splits: Splits, out_dir: Path) -> Path | None:
    """Write ``skipped.jsonl`` into ``out_dir`` if any row was skipped."""
    if not splits.skipped:
        return None
    path = out_dir / "skipped.jsonl"
    write_skipped(path, splits.skipped)
    return path
