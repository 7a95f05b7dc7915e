"""Command-line lists for tests: one option taken out of a shared list of fast settings."""

from __future__ import annotations


def without(args: list[str], option: str) -> list[str]:
    """`args` without `option` and its value (e.g. the shared `--val-fraction` of a test module's FAST,
    which `--select-on test` refuses)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == option:
            skip = True
            continue
        out.append(arg)
    return out
