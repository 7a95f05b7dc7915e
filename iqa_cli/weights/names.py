"""Which weights-store names are safe: one plain file-name component (the store and the registry of
known checkpoints both hold to it)."""

from __future__ import annotations

import re

from iqa_cli.errors import ConfigError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$")


def validate_name(name: str) -> str:
    """A store name is one plain file-name component: letters, digits, `_ . + -`, no `..`."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or ".." in name:
        raise ConfigError(
            f"invalid weights name {name!r}: use 1-128 letters, digits and _ . + - "
            "(starting with a letter or digit, no path separators, no '..')"
        )
    return name
