"""``omnibind shards MANIFEST --out DIR [--shard-size N] [--overwrite]``."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def shards(
    manifest: str = typer.Argument(..., help="Manifest path, builtin:NAME[?k=v], or shards to re-shard."),
    out: Path = typer.Option(..., "--out", help="Folder for shard-NNNNNN.tar and shards.json."),
    shard_size: int = typer.Option(10_000, "--shard-size", help="Samples per shard.", min=1),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Write into a non-empty DIR, replacing its shards and shards.json."
    ),
) -> None:
    """Write the items of MANIFEST as WebDataset tar shards in DIR, then DIR/shards.json.

    Files keep their bytes and extension; inline text becomes .txt, numbers .json, in-memory arrays .npy.

    DIR is then a data source: data.source: DIR, one DIR/shard-000000.tar, or DIR/shard-{000000..000009}.tar.
    """
    from omnibind.errors import OmnibindError

    if out.exists() and not out.is_dir():
        raise OmnibindError(f"--out {str(out)!r} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OmnibindError(
            f"--out {str(out)!r} is not empty; choose an empty or new folder, or pass --overwrite to "
            "replace its shards"
        )
    from omnibind.data.shards import INDEX, write_shards
    from omnibind.data.sources import load_source

    loaded = load_source(manifest)
    write_shards(loaded.records, out, shard_size=shard_size, source=manifest)
    index = json.loads((out / INDEX).read_text(encoding="utf-8"))
    size = sum(s["bytes"] for s in index["shards"])
    n = len(index["shards"])
    typer.echo(
        f"wrote {n} shard{'s' if n != 1 else ''}, {index['total']} samples, {size:,} bytes "
        f"({', '.join(index['modalities'])}) -> {out}"
    )
