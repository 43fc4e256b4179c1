"""The `qkv` command line. Each command is a thin layer over the library.

Errors that qkv raises on purpose (`QkvError`) are printed on one line, with exit status 2;
Ctrl-C exits with status 130. Tracebacks are for bugs only (set QKV_DEBUG=1 to see them always).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from qkv.errors import QkvError

app = typer.Typer(
    name="qkv",
    help="Implement, train, run and explain the Transformer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """Implement, train, run and explain the Transformer."""


def echo_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


# ---------------------------------------------------------------------------------------------
# Commands. Keep each one short: parse options, call the library, print the result.
# ---------------------------------------------------------------------------------------------


@app.command()
def version() -> None:
    """Print the qkv and PyTorch versions."""
    import torch

    import qkv

    typer.echo(f"qkv {qkv.__version__} (torch {torch.__version__})")


@app.command()
def serve(
    model: Annotated[Path, typer.Option("--model", "-m", help="Run directory to serve.")],
    host: Annotated[str, typer.Option(help="Address to bind; only this machine by default.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
) -> None:
    """Serve a model over HTTP with the explorer page at / (API docs at /docs)."""
    from qkv import serve as serving

    serving.serve(model, host=host, port=port)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point of the `qkv` console script: one line for deliberate errors, never a traceback."""
    try:
        app(args=argv, standalone_mode=True)     # click handles usage errors itself (exit 2)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except QkvError as exc:
        if os.environ.get("QKV_DEBUG"):
            raise
        echo_error(" ".join(str(exc).split()))
        return 2
    except KeyboardInterrupt:
        echo_error("interrupted")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
