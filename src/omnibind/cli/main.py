"""The Typer app. Command modules import nothing heavy at module level, so ``omnibind --help`` is instant."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import typer

from omnibind.cli import demo, embed, evaluate, info, train
from omnibind.cli import index as index_cmd
from omnibind.cli import report as report_cmd
from omnibind.cli import search as search_cmd
from omnibind.cli import serve as serve_cmd
from omnibind.cli import shards as shards_cmd

app = typer.Typer(
    name="omnibind",
    help="One embedding space over any number of modalities: train, evaluate, embed.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn omnibind's own errors into one red line and exit status 2, instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from omnibind.errors import OmnibindError

        try:
            return fn(*args, **kwargs)
        except (OmnibindError, KeyError, FileNotFoundError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
            sys.exit(2)

    return wrapper


app.command("demo")(_friendly(demo.demo))
app.command("train")(_friendly(train.train))
app.command("eval")(_friendly(evaluate.evaluate))
app.command("embed")(_friendly(embed.embed))
app.command("info")(_friendly(info.info))
app.command("shards")(_friendly(shards_cmd.shards))
index_app = typer.Typer(help="Build and change search indexes.", no_args_is_help=True)
index_app.command("build")(_friendly(index_cmd.build))
index_app.command("add")(_friendly(index_cmd.add))
index_app.command("update")(_friendly(index_cmd.update))
index_app.command("delete")(_friendly(index_cmd.delete))
index_app.command("compact")(_friendly(index_cmd.compact))
app.add_typer(index_app, name="index")
app.command("search")(_friendly(search_cmd.search))
app.command("serve")(_friendly(serve_cmd.serve))
app.command("report")(_friendly(report_cmd.report))

if __name__ == "__main__":
    app()
