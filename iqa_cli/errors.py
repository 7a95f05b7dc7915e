"""User-facing errors.

Every error a user can cause (bad input file, missing cache, wrong checkpoint, ...) is raised as an
`IQAError` subclass whose message is one line naming the file and what was expected. The CLI prints
that line and exits non-zero; `--debug` shows the traceback instead.
"""

from __future__ import annotations

from pathlib import Path


class IQAError(Exception):
    """An error caused by user input; its message is printed as-is, on one line."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else None
        text = message if path is None else f"{path}: {message}"
        # One line, always: tracebacks and multi-line dumps are for --debug.
        super().__init__(" ".join(str(text).split()))


class DataError(IQAError):
    """A dataset folder, metadata file, image or cache is missing or malformed."""


class CheckpointError(IQAError):
    """A checkpoint is unreadable, unsafe, or does not fit the model."""


class ConfigError(IQAError):
    """An option, config file or combination of flags is invalid."""


class DownloadError(IQAError):
    """A download failed, was refused, or did not verify."""
