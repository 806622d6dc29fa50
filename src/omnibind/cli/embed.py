"""``omnibind embed RUN --data DATA --out FILE.parquet | DIR [--part-size N]`` (also under torchrun)."""

from __future__ import annotations

from pathlib import Path

import typer


def embed(
    run: Path = typer.Argument(..., help="Run folder (or a model folder)."),
    data: str = typer.Option(..., "--data", help="Manifest path or builtin:NAME[?k=v]."),
    out: Path = typer.Option(
        ..., "--out", help="A .parquet file, or a folder of parts (part-RRRRR-SSSSS.parquet + parts.json)."
    ),
    batch_size: int = typer.Option(256, help="Items per forward pass."),
    device: str = typer.Option(
        "auto", "--device", help="auto (CUDA where there is one), cpu, cuda[:N], mps."
    ),
    part_size: int = typer.Option(10_000, "--part-size", help="Items per part (folder output)."),
) -> None:
    """Embed every item of DATA: one row per item, one list<float32> column per modality (null if absent).

    With a folder as --out the items are embedded in parts, streaming, and a rerun skips finished parts;
    under torchrun every process embeds its share of the parts."""
    if out.suffix != ".parquet":
        _embed_parts(run, data, out, batch_size, device, part_size)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    from omnibind.data.loading import build_kinds, build_splits
    from omnibind.evaluation.evaluate import embed_dataset
    from omnibind.io import write_bytes_atomic
    from omnibind.model import OmniModel, model_dir

    model = OmniModel.load(model_dir(run), device=device)
    splits = build_splits(model.config, build_kinds(model.config), fit=False, source=data)
    columns: dict[str, list] = {"id": [], "split": [], "label": []}
    for m in model.modalities:
        columns[m] = []
    total = 0
    for split, ds in splits.datasets.items():
        embeddings, present = embed_dataset(model, ds, batch_size)
        columns["id"].extend(ds.ids)
        columns["split"].extend([split] * len(ds))
        columns["label"].extend([None if v is None else str(v) for v in (ds.labels or [None] * len(ds))])
        for j, m in enumerate(model.modalities):
            rows = embeddings[m].numpy()
            columns[m].extend(rows[i].tolist() if present[i, j] else None for i in range(len(ds)))
        total += len(ds)
    table = pa.table(columns)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out, sink.getvalue().to_pybytes())
    typer.echo(f"embedded {total} items ({', '.join(model.modalities)}) -> {out}")


def _embed_parts(run: Path, data: str, out: Path, batch_size: int, device: str, part_size: int) -> None:
    """The folder layout, on this process's share of the parts (all of them without torchrun)."""
    import torch

    from omnibind.errors import OmnibindError
    from omnibind.evaluation.parts import PARTS_NAME, embed_parts
    from omnibind.index.store import model_hash
    from omnibind.model import OmniModel, model_dir
    from omnibind.training.distributed import world_from_env
    from omnibind.training.precision import resolve_device

    if part_size < 1:
        raise OmnibindError(f"--part-size must be at least 1, got {part_size}")
    world = world_from_env()
    where = resolve_device(device)
    if world.enabled and where.type == "cuda":
        where = torch.device("cuda", world.local_rank)  # one GPU per process
    folder = model_dir(run)
    model = OmniModel.load(folder, device=where)
    listing = embed_parts(
        model, data, out, part_size, batch_size, world.rank, world.world_size, model_ref=model_hash(folder)
    )
    if listing is not None:
        typer.echo(
            f"embedded {listing['items']} items in {len(listing['parts'])} parts -> {out / PARTS_NAME}"
        )
