"""The `nmt` command line. Thin: each command parses its options and calls into `nmt`."""
from __future__ import annotations

import sys
from functools import wraps
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from nmt import __version__
from nmt.errors import NMTError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train, decode, score and compare neural machine translation models.")
err = Console(stderr=True)


def user_errors(fn):
    """Print an NMTError as one clear line and exit 2; bugs keep their tracebacks."""
    @wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NMTError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False)
            raise typer.Exit(2)
    return wrapper


def _version(value: bool):
    if value:
        print(f"nmt {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    """Train, decode, score and compare neural machine translation models."""


# ---- data and tokenizer commands (issue 2) ----

# ---- train (issue 4) ----

# ---- translate and eval (issue 5) ----

# ---- compare and attention (issue 6) ----


if __name__ == "__main__":
    app()
