"""User-facing errors.

Every error a user can cause (bad input file, missing cache, wrong checkpoint, ...) is raised as an
`IQAError` subclass whose message is one line naming the file and what was expected. The CLI prints
that line and exits non-zero; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import re
from pathlib import Path

from iqa_cli.fsnames import printable

# Exit codes by kind (documented in the README's "Errors"); the shell-level ones are 74 (an operating-
# system error such as a full disk), 124 (--time-limit), 130 (Ctrl-C) and 143 (SIGTERM).
EXIT_USAGE = 2  # an option, a config file or a combination of flags
EXIT_DIVERGED = 3  # training diverged (NaN or infinite loss); the last good checkpoint is kept
EXIT_DATA = 65  # bad input data: a dataset, metadata file, image, cache or checkpoint (sysexits EX_DATAERR)
EXIT_UNAVAILABLE = 69  # a download that is missing, unreachable or does not verify (EX_UNAVAILABLE)


_LINE_BREAKS = re.compile(r"\s*[^\S ]\s*")  # whitespace other than a plain space, and the blanks around it


def some_names(names: list[str], limit: int = 3) -> str:
    """The first `limit` names for a one-line message: `a, b, c, ...`."""
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


class Stopped(Exception):
    """A job that stopped on request (a signal, or its time limit) after saving a resumable state: not a
    fault of the input, and not a bug. `exit_code` is 128 + the signal's number, or 124 for a time limit;
    every command that trains (`train`, a sweep, `demo`) leaves with it."""

    exit_code = 143


class IQAError(Exception):
    """An error caused by user input; its message is printed as-is, on one line."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else None
        # One line, always: tracebacks and multi-line dumps are for --debug. Line breaks and tabs (with the
        # indentation around them) become one space; runs of plain spaces stay, as they may be a name's or a
        # value's own. The file is named exactly (a newline or tab in its name escaped), so it can be found.
        text = _LINE_BREAKS.sub(" ", str(message)).strip()
        super().__init__(text if path is None else f"{printable(str(path))}: {text}")


class DataError(IQAError):
    """A dataset folder, metadata file, image or cache is missing or malformed."""

    exit_code = EXIT_DATA


class CheckpointError(IQAError):
    """A checkpoint is unreadable, unsafe, or does not fit the model."""

    exit_code = EXIT_DATA


class ConfigError(IQAError):
    """An option, config file or combination of flags is invalid."""


class DownloadError(IQAError):
    """A download failed, was refused, or did not verify."""

    exit_code = EXIT_UNAVAILABLE
