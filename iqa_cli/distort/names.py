"""The `<reference>_<TT>_<LL>.<ext>` image names of distorted sets, read in one place."""

from __future__ import annotations

import re

_TYPE_LEVEL = re.compile(r"_(\d{2})_(\d{2})\.[A-Za-z0-9]+$")


def type_and_level(name: str) -> tuple[int, int] | None:
    """(type, level) of a file named `<reference>_<TT>_<LL>.<ext>` (KADID-10k's `I01_01_01.png`, the names
    `iqa prepare distorted` writes), as two-digit numbers; None for any other name."""
    match = _TYPE_LEVEL.search(str(name))
    return (int(match.group(1)), int(match.group(2))) if match is not None else None
