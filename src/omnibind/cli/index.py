"""``omnibind index build|add|update|delete|compact``: make and change a search index.

``omnibind index build RUN --data DATA --out INDEX`` (a Typer group cannot also take ``RUN`` as its own
argument, so building is the ``build`` subcommand).
"""

from __future__ import annotations

from pathlib import Path

import typer


def _records(index_modalities: list[str], data: str, root: str | None) -> list:
    from omnibind.data.sources import load_source

    return load_source(data, root=root, modalities=index_modalities).records


def _acknowledge(total: int, ids: list[str]) -> None:
    # printed only after the batch's commit: every item counted here survives a crash
    typer.echo(f"committed {total} items (last id {ids[-1]})")


def _add(index, data: str, root: str | None, batch_size: int) -> int:  # noqa: ANN001
    records = _records(index.modalities, data, root)
    return index.add(records, batch_size=batch_size, on_commit=_acknowledge, progress=True)


def build(
    run: Path = typer.Argument(..., help="Run folder (or a model folder)."),
    data: str = typer.Option(None, "--data", help="Manifest path or builtin:NAME[?k=v]."),
    out: str = typer.Option(
        ...,
        "--out",
        help="Index directory to create, or qdrant://HOST:PORT/COLLECTION, qdrant+path://DIR/NAME.",
    ),
    from_embeddings: Path = typer.Option(
        None, "--from-embeddings", help="A folder of parts from `omnibind embed RUN --out DIR` (no encoding)."
    ),
    root: str = typer.Option(None, "--root", help="Data folder for built-in loaders that need one."),
    batch_size: int = typer.Option(1024, help="Items per commit."),
    exact_threshold: int = typer.Option(200_000, help="Vectors per modality above which HNSW is used."),
    prefix: int = typer.Option(64, help="Matryoshka prefix width of the HNSW graph."),
    storage: str = typer.Option(
        "float32",
        "--storage",
        help="First stage of a local index: float32 (exact; HNSW above the threshold), float16 or int8 "
        "(a quantized scan re-ranked from the float32 rows: a half or a quarter of the memory).",
    ),
    rerank: int = typer.Option(200, "--rerank", help="Candidates of a float16/int8 first stage re-ranked."),
    device: str = typer.Option("auto", "--device", help="Where the model embeds: auto, cpu, cuda[:N], mps."),
) -> None:
    """Embed every item of DATA with the model of RUN into a new index at OUT (or index the parts that
    `omnibind embed RUN --out DIR` wrote, with --from-embeddings DIR)."""
    from omnibind.errors import OmnibindError
    from omnibind.index import Index, SearchSettings

    if (data is None) == (from_embeddings is None):
        raise OmnibindError("give exactly one of --data DATA and --from-embeddings DIR (nothing was written)")
    if from_embeddings is not None and not (from_embeddings / "parts.json").exists():
        raise OmnibindError(
            f"{from_embeddings} has no parts.json: the embedding has not finished; rerun `omnibind embed` "
            "with the same arguments (it skips the parts already written); nothing was written"
        )
    settings = SearchSettings(exact_threshold=exact_threshold, prefix=prefix, storage=storage, rerank=rerank)
    index = Index.create(out, run, settings, device=device)
    if from_embeddings is not None:
        total = index.add_parts(from_embeddings, on_commit=_acknowledge, progress=True, root=root)
    else:
        total = _add(index, data, root, batch_size)
    typer.echo(
        f"indexed {total} items ({', '.join(f'{m}: {n}' for m, n in index.counts().items())}) -> {out}"
    )


def add(
    index_dir: str = typer.Argument(..., metavar="INDEX", help="Index directory or qdrant:// URL."),
    data: str = typer.Option(..., "--data", help="Manifest path or builtin:NAME[?k=v]."),
    root: str = typer.Option(None, "--root", help="Data folder for built-in loaders that need one."),
    batch_size: int = typer.Option(1024, help="Items per commit."),
    device: str = typer.Option("auto", "--device", help="Where the model embeds: auto, cpu, cuda[:N], mps."),
) -> None:
    """Add the items of DATA to INDEX (no rebuild); prints a line after each committed batch."""
    from omnibind.index import Index

    index = Index.open(index_dir, device=device)
    total = _add(index, data, root, batch_size)
    typer.echo(f"added {total} items; the index holds {len(index)}")


def update(
    index_dir: str = typer.Argument(..., metavar="INDEX", help="Index directory or qdrant:// URL."),
    data: str = typer.Option(..., "--data", help="Manifest path or builtin:NAME[?k=v]."),
    root: str = typer.Option(None, "--root", help="Data folder for built-in loaders that need one."),
    batch_size: int = typer.Option(1024, help="Items per commit."),
    upsert: bool = typer.Option(False, "--upsert", help="Also add the items whose id is not in INDEX."),
    device: str = typer.Option("auto", "--device", help="Where the model embeds: auto, cpu, cuda[:N], mps."),
) -> None:
    """Replace the items of INDEX that have the ids of DATA's items; an id not in INDEX is an error
    (nothing is written) unless --upsert."""
    from omnibind.index import Index, UnknownItemError

    index = Index.open(index_dir, device=device)
    records = _records(index.modalities, data, root)
    known = index.backend.live([str(r.id) for r in records])
    replaced = sum(str(r.id) in known for r in records)
    try:
        total = index.update(
            records, batch_size=batch_size, on_commit=_acknowledge, progress=True, upsert=upsert
        )
    except UnknownItemError as exc:
        raise UnknownItemError(f"{exc}; add them with `omnibind index add`, or pass --upsert") from None
    typer.echo(
        f"updated {total} items ({replaced} replaced, {total - replaced} added); the index holds {len(index)}"
    )


def delete(
    index_dir: str = typer.Argument(..., metavar="INDEX", help="Index directory or qdrant:// URL."),
    ids: list[str] = typer.Argument(..., help="Item ids to delete."),
) -> None:
    """Delete items by id (one commit; all or none)."""
    from omnibind.index import Index

    index = Index.open(index_dir)
    count = index.delete(ids)
    typer.echo(f"deleted {count} items; the index holds {len(index)}")


def compact(
    index_dir: str = typer.Argument(..., metavar="INDEX", help="Index directory or qdrant:// URL."),
) -> None:
    """Rewrite INDEX without deleted rows and old versions (frees disk; no other writer may run)."""
    from omnibind.index import Index

    index = Index.open(index_dir)
    index.compact()
    typer.echo(f"compacted {index_dir}: {len(index)} items")
