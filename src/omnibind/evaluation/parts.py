"""Embedding a corpus in parts, on one process or many (``torchrun -m omnibind embed RUN --out DIR``).

The items of the data source, in source order, are cut into parts of ``part_size`` items; part ``s``
belongs to rank ``s % N``. Each rank embeds its parts with the values decoded as a batch needs them
(nothing is held but the records) and writes ``DIR/part-RRRRR-SSSSS.parquet`` atomically (``R`` the
rank that wrote it, ``S`` the part). A part that exists is finished: a rerun, with any number of
processes, skips it, so a run killed at any moment loses nothing already written. When every part is
there, rank 0 writes ``DIR/parts.json``: the parts with their item ranges and counts, the model's
modalities and width, the source. The vectors of a part do not depend on N (its batches are the same),
so 2 processes write what 1 process writes.

A part file has one row per item: ``id``, ``split``, ``label``, and one ``list<float32>`` column per
modality (null where the item lacks it), as ``omnibind embed ... --out FILE.parquet`` writes.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from omnibind.data.dataset import split_records
from omnibind.data.loading import build_kinds, load_data
from omnibind.data.streaming import LazyDataset, describe_mismatch
from omnibind.errors import OmnibindError
from omnibind.io import write_bytes_atomic, write_text_atomic
from omnibind.model import OmniModel

PARTS_NAME = "parts.json"


def part_name(rank: int, part: int) -> str:
    """``part-RRRRR-SSSSS.parquet``."""
    return f"part-{rank:05d}-{part:05d}.parquet"


def finished_parts(out_dir: Path) -> dict[int, Path]:
    """The parts already written in ``out_dir``, by part number (whichever rank wrote them)."""
    done: dict[int, Path] = {}
    for path in sorted(out_dir.glob("part-*-*.parquet")):
        try:
            done[int(path.stem.split("-")[2])] = path
        except (IndexError, ValueError):
            continue
    return done


def _table(model: OmniModel, data: LazyDataset, splits: list[str], batch_size: int) -> Any:
    import pyarrow as pa

    columns: dict[str, list] = {"id": list(data.ids), "split": splits, "label": []}
    columns["label"] = [None if r.label is None else str(r.label) for r in data.records]
    vectors: dict[str, list] = {m: [] for m in model.modalities}
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            batch = data.batch(torch.arange(start, min(start + batch_size, len(data))))
            for j, (name, z) in enumerate(model.encode(batch).items()):
                rows = z.float().cpu().numpy()
                here = batch.present[:, j].tolist()
                vectors[name].extend(rows[i].tolist() if here[i] else None for i in range(len(batch)))
    for name in model.modalities:
        columns[name] = pa.array(vectors[name], type=pa.list_(pa.float32()))
    return pa.table(columns)


def embed_parts(
    model: OmniModel,
    source: str,
    out_dir: str | Path,
    part_size: int = 10_000,
    batch_size: int = 256,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    model_ref: str = "",
) -> dict[str, Any] | None:
    """Embed the items of ``source`` into parts in ``out_dir``; this process takes the parts ``s`` with
    ``s % world_size == rank`` that are not finished yet.

    Returns:
        the ``parts.json`` content on rank 0 (after every rank's parts exist), ``None`` on the others.

    Raises:
        OmnibindError: ``out_dir`` holds parts of another model, source or part size.
        DataError: a value that cannot be decoded (naming the record and the field).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    loaded = load_data(cfg, source)
    records = loaded.records
    assigned = split_records(records, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed)
    split_of = {id(r): name for name, rs in assigned.items() for r in rs}
    kinds = build_kinds(cfg)
    identity = {
        "source": source,
        "items": len(records),
        "part_size": part_size,
        "modalities": list(model.modalities),
        "dim": model.dim,
        "model": model_ref,
    }
    _check_plan(out, identity)
    count = -(-len(records) // part_size)
    parts = [(s, s * part_size, min((s + 1) * part_size, len(records))) for s in range(count)]
    mine = [p for p in parts if p[0] % world_size == rank]
    started = time.time()
    bar = tqdm(total=len(records), desc="embedding", unit="item", disable=not (progress and rank == 0))
    for s, lo, hi in mine:
        found = finished_parts(out).get(s)
        if found is not None:
            problem = part_problem(found, hi - lo)
            if problem is None:
                continue
            warnings.warn(f"{found.name} is damaged ({problem}); embedding its items again", stacklevel=2)
            found.unlink(missing_ok=True)
        chunk = records[lo:hi]
        data = LazyDataset(chunk, kinds, "stop", None, loaded.facts, loaded.name)
        table = _table(model, data, [split_of[id(r)] for r in chunk], batch_size)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        write_bytes_atomic(out / part_name(rank, s), sink.getvalue().to_pybytes())
        if rank == 0:
            _show(bar, out, parts, started)
    if rank != 0:
        return None
    while len(finished_parts(out)) < len(parts):  # the other ranks' parts (torchrun stops us if one dies)
        _show(bar, out, parts, started)
        time.sleep(0.5)
    _show(bar, out, parts, started)
    bar.close()
    done = finished_parts(out)
    listing = {
        **identity,
        "parts": [
            {"part": s, "file": done[s].name, "first_item": lo, "items": hi - lo} for s, lo, hi in parts
        ],
    }
    write_text_atomic(out / PARTS_NAME, json.dumps(listing, indent=1))
    return listing


def part_problem(path: Path, items: int) -> str | None:
    """Why the part file ``path`` is not a whole part of ``items`` rows (truncated, not Parquet), or None.

    Parts are written atomically, so this finds what a crash cannot make but a full disk, a copy or a
    filesystem without atomic rename can: a file cut short."""
    import pyarrow.parquet as pq

    try:
        rows = pq.read_metadata(path).num_rows
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ... for a bad footer
        return f"not a readable Parquet file: {str(exc).splitlines()[0][:120]}"
    return None if rows == items else f"{rows} rows where the part holds {items}"


def _show(bar: Any, out: Path, parts: list[tuple[int, int, int]], started: float) -> None:
    """Items finished over every rank (the part files that exist), and the rate of those written since
    this process started (parts of an earlier, killed run do not count)."""
    done = finished_parts(out)
    sizes = {s: hi - lo for s, lo, hi in parts}
    bar.n = sum(sizes[s] for s in done if s in sizes)
    fresh = 0
    for s, path in done.items():
        try:
            fresh += sizes.get(s, 0) if path.stat().st_mtime >= started else 0
        except OSError:
            continue
    bar.set_postfix(items_s=f"{fresh / max(time.time() - started, 1e-9):.0f}", refresh=False)
    bar.refresh()


def _check_plan(out: Path, identity: dict[str, Any]) -> None:
    """Parts from another plan (model, source, part size) must not be mixed with this one's."""
    plan = out / ".plan.json"
    if plan.exists():
        mismatch = describe_mismatch(json.loads(plan.read_text()), identity)
        if mismatch:
            raise OmnibindError(
                f"{out} holds embedding parts of another run ({mismatch}); choose another --out or delete it"
            )
        return
    write_text_atomic(plan, json.dumps(identity, indent=1))  # ranks racing here write the same bytes
