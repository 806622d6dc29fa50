"""``omnibind serve INDEX [--host 127.0.0.1] [--port 8000] [--api-key-file FILE] [--batch-wait-ms 2]``."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(
    index_dir: str = typer.Argument(..., metavar="INDEX", help="Index directory or qdrant:// URL."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; not loopback needs API keys."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key_file: Path = typer.Option(
        None, "--api-key-file", help="File of 'read KEY' / 'write KEY' lines (see docs/serving.md)."
    ),
    max_k: int = typer.Option(1000, "--max-k", help="Largest k a search may ask for."),
    max_body_mb: float = typer.Option(8.0, "--max-body-mb", help="Largest request body, in MiB."),
    workers: int = typer.Option(0, "--workers", help="Searches computed at once (0: one per CPU core)."),
    batch_wait_ms: float = typer.Option(
        2.0,
        "--batch-wait-ms",
        help="How long a raw query value waits for others to share its encoder call, in ms (0: no batching).",
    ),
    max_batch: int = typer.Option(64, "--max-batch", help="Most values embedded in one encoder call."),
    threads: int = typer.Option(
        0,
        "--threads",
        help="PyTorch threads per server process (0: its share of the cores less one, at least 1).",
    ),
    processes: int = typer.Option(
        1,
        "--processes",
        help="Server processes on one port (a local index's vectors are memory-mapped and shared; one "
        "writer at a time, readers see each commit at their next request).",
    ),
) -> None:
    """Serve INDEX over HTTP: the search API under /v1, the search page at /, API docs at /docs."""
    import uvicorn

    from omnibind.index import Index, ModelMismatchError
    from omnibind.serving import ApiKeys, ServeSettings, create_app, load_key_file
    from omnibind.serving.security import ServeError

    keys = load_key_file(api_key_file) if api_key_file is not None else ApiKeys()
    settings = ServeSettings(
        host=host,
        port=port,
        keys=keys,
        max_k=max_k,
        max_body_bytes=int(max_body_mb * 1024 * 1024),
        workers=workers,
        batch_wait_ms=batch_wait_ms,
        max_batch=max_batch,
        threads=threads,
    )
    settings.check()  # before opening anything: a public address without keys is refused at once
    if processes < 1:
        raise ServeError(f"--processes must be at least 1, got {processes}")
    if processes > 1 and index_dir.startswith("qdrant+path://"):
        raise ServeError(
            "--processes > 1 cannot share a Qdrant local-mode folder (one process holds its lock); serve a "
            "Qdrant server (qdrant://HOST:PORT/COLLECTION) or a local omnibind index instead"
        )
    import dataclasses

    import torch

    index = Index.open(index_dir)
    settings = dataclasses.replace(settings, threads=settings.torch_threads(processes))
    torch.set_num_threads(settings.threads)  # each worker process of --processes N sets its own
    index.build_graphs()  # large modalities: build the search graph now, not in the first query
    try:
        index.model.eval()  # load now, so the first query is not slow and a mismatch shows at start
    except ModelMismatchError as exc:
        typer.secho(f"warning: {exc}; raw-value queries will get 409", fg=typer.colors.YELLOW, err=True)
    threads = f"{settings.threads} torch thread{'s' if settings.threads > 1 else ''} per process"
    where = f"{index_dir} ({len(index)} items, {threads}) on http://{host}:{port}/  (API docs: /docs)"
    # keep-alive well above uvicorn's 5 s: a busy client that reuses a connection just as the server closes
    # it sees a dropped request (measured: 1 in 5,000 under benchmarks/serve_load.py on a loaded machine)
    if processes == 1:
        app = create_app(index, settings)
        typer.echo(f"serving {where}")
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_keep_alive=75)
        return
    import os

    from omnibind.serving.app import ENV, settings_env

    index.close()
    del index  # each worker opens its own (the vectors' pages are shared through the page cache)
    os.environ[ENV] = settings_env(index_dir, settings)
    typer.echo(f"serving {where} with {processes} processes")
    uvicorn.run(
        "omnibind.serving.app:app_from_env",
        factory=True,
        workers=processes,
        host=host,
        port=port,
        log_level="warning",
        timeout_keep_alive=75,
    )
