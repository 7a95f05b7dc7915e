"""`iqa prepare`: pack an official dataset download into an HDF5/NPZ cache."""

from __future__ import annotations

import typer

app = typer.Typer(help="Pack an official dataset download into a fast uint8 cache.", no_args_is_help=True)
