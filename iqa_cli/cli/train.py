"""`iqa train`: placeholder group; its commands are built by later issues."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="(coming) train commands.",
    no_args_is_help=True,
)
