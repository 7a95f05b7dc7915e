"""Option callbacks shared by several commands: values refused while the command line is parsed."""

from __future__ import annotations

import stat
from pathlib import Path

import typer

from iqa_cli.errors import ConfigError


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


def not_into_standard_output(path: Path | None, option: str, *, json_output: bool) -> None:
    """Refuse a file option that writes where standard output goes when that would mix two outputs: beside
    `--json` (`--per-image /dev/stdout` put a CSV inside the JSON a program reads), or the file a shell's
    `> FILE` opened (one output would replace the other's file)."""
    from iqa_cli.atomic import is_standard_output

    if path is None or not is_standard_output(path):
        return
    if json_output:
        raise ConfigError(
            f"{option}: {path} is standard output, where --json prints its report; write it to a file, or leave "
            "out --json"
        )
    if stat.S_ISREG(Path(path).stat().st_mode):
        raise ConfigError(f"{option}: {path} is the file standard output goes to; give another file")
