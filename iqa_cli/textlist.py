"""Comma-separated option values (`--cross a,b`, `--watch a,b`, `--sweep-values 1,2`, `--canvas 384,512`)."""

from __future__ import annotations

from iqa_cli.errors import ConfigError


def comma_list(text: str, what: str, *, separators: str = ",") -> list[str]:
    """`a, b,c` -> ['a', 'b', 'c']; an empty or blank text -> [].

    An empty entry (`a,,b`, `a,`) is an error, not skipped: it is what `--cross "$A,$B"` gives when a
    shell variable is unset, and skipping it would run on fewer items than the command names.
    `separators`: further characters read as commas (`;` in a config file's tuple values)."""
    joined = text
    for separator in separators:
        joined = joined.replace(separator, ",")
    if not joined.strip():
        return []
    parts = [part.strip() for part in joined.split(",")]
    if "" in parts:
        raise ConfigError(f"{what}: an empty entry in {text!r} (a comma too many, or an unset shell variable?)")
    return parts
