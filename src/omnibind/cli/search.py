"""``omnibind search INDEX --text ... --image ... [--target M] [-k 10] [--where k=v] [--json]``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer


def search(
    index_dir: str = typer.Argument(..., metavar="INDEX", help="Index directory or qdrant:// URL."),
    text: str = typer.Option(None, "--text", help="Text query (for the index's text modality)."),
    image: Path = typer.Option(None, "--image", help="Image file query."),
    audio: Path = typer.Option(None, "--audio", help="Audio file query."),
    value: list[str] = typer.Option([], "--value", help="MODALITY=VALUE for any modality; repeatable."),
    like: str = typer.Option(None, "--like", help="Item id: more like this item."),
    target: str = typer.Option(None, "--target", help="Modality to rank (default: all)."),
    k: int = typer.Option(10, "-k", "--k", help="At most this many results."),
    where: list[str] = typer.Option([], "--where", help="Filter: key=value, key>=n, key=a,b; repeatable."),
    min_score: float = typer.Option(None, "--min-score", help="Stop below this score."),
    max_gap: float = typer.Option(None, "--max-gap", help="Stop where the score drops by more than this."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the POST /v1/search response body (JSON) instead of a table."
    ),
) -> None:
    """Search INDEX; several query values make one composed query."""
    from dataclasses import replace

    from rich.console import Console
    from rich.table import Table

    from omnibind.index import Index, Query, SearchError, SearchSettings, parse_where
    from omnibind.index.backends import is_url
    from omnibind.index.store import read_meta

    if is_url(index_dir):  # the engine searches; its settings are stored with the collection
        index = Index.open(index_dir)
    else:
        # one query: an exact scan (~50 ms per million vectors of width 256 on one core) beats building the
        # HNSW graph first (over a minute for a million)
        stored = SearchSettings(**read_meta(index_dir).get("settings", {}))
        index = Index.open(index_dir, settings=replace(stored, exact_threshold=2**62))
    values: dict[str, object] = {}
    for kind, given in (("text", text), ("image", image), ("audio", audio)):
        if given is None:
            continue
        names = [m for m, kd in index.kinds.items() if kd == kind]
        if len(names) != 1:
            raise SearchError(
                f"--{kind} needs exactly one {kind} modality in the index, found {names or 'none'}; "
                f"use --value MODALITY=VALUE"
            )
        values[names[0]] = str(given)
    for item in value:
        name, sep, raw = item.partition("=")
        if not sep:
            raise SearchError(f"--value takes MODALITY=VALUE, got {item!r}")
        values[name] = raw
    if values:
        index.model.eval()  # load it now, so took_ms times the search alone (as the server's does)
    start = time.perf_counter()
    result = index.search(
        Query(values=values, like=like),
        target=target,
        k=k,
        where=parse_where(where) or None,
        min_score=min_score,
        max_gap=max_gap,
    )
    if as_json:
        typer.echo(json.dumps(result.to_json((time.perf_counter() - start) * 1000)))
        return
    table = Table(title=f"{len(result.hits)} results ({result.method}; stopped: {result.stopped_because})")
    for col in ("rank", "id", "score", "modality", "metadata"):
        table.add_column(col, justify="right" if col in ("rank", "score") else "left")
    for rank, hit in enumerate(result.hits, 1):
        meta = ", ".join(f"{key}={val}" for key, val in list(hit.metadata.items())[:6])
        table.add_row(str(rank), hit.id, f"{hit.score:.4f}", hit.modality, meta)
    Console().print(table)
