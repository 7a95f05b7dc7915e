"""`iqa predict`: registered on the root app by `register`."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add this module's command(s) to the root app (filled in by the issue that builds it)."""
