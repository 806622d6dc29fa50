"""``omnibind embed RUN --data DATA --out FILE.parquet``."""

from __future__ import annotations

from pathlib import Path

import typer


def embed(
    run: Path = typer.Argument(..., help="Run folder (or a model folder)."),
    data: str = typer.Option(..., "--data", help="Manifest path or builtin:NAME[?k=v]."),
    out: Path = typer.Option(..., "--out", help="Parquet file to write."),
    batch_size: int = typer.Option(256, help="Items per forward pass."),
    device: str = typer.Option(
        "auto", "--device", help="auto (CUDA where there is one), cpu, cuda[:N], mps."
    ),
) -> None:
    """Embed every item of DATA: one row per item, one list<float32> column per modality (null if absent)."""
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
