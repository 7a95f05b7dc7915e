"""Option callbacks shared by several commands: values refused while the command line is parsed."""

from __future__ import annotations

import typer


def open_fraction(value: float) -> float:
    """A share strictly between 0 and 1 (`--test-fraction`): 0 or 1 leaves a part of every split empty,
    which would otherwise be found only after the images' headers are read."""
    if not 0.0 < value < 1.0:
        raise typer.BadParameter(f"{value:g} is not a share strictly between 0 and 1")
    return value


def given(ctx: typer.Context, name: str) -> bool:
    """Whether parameter `name` was set on the command line or from the environment, not left at its
    default: an option that its other options make unused is refused only when it was asked for."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


def given_flags(ctx: typer.Context, flags: dict[str, str]) -> list[str]:
    """The flags (values of `flags`, by parameter name) of the parameters `given` on this command line."""
    return [flag for name, flag in flags.items() if given(ctx, name)]
