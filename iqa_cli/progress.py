"""Progress reporting without a UI dependency.

The core reports progress through a `Progress` object (bars: `start`, `advance`, `finish`); the CLI
supplies one that draws a rich bar on a terminal or prints plain lines otherwise. The core never
imports rich. Messages go to the standard `logging` module (loggers `iqa_cli.*`); the CLI routes them
through its progress display, so a line never breaks a bar.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def finish(self) -> None: ...


def overall(progress: object, description: str, total: int | None, done: int) -> None:
    """Report a whole job's progress (a training run's epochs) next to the current step's bar, where the
    progress object supports it (`ConsoleProgress` on a terminal); nothing otherwise."""
    method = getattr(progress, "overall", None)
    if callable(method):
        method(description, total, done)


def end_overall(progress: object) -> None:
    method = getattr(progress, "end_overall", None)
    if callable(method):
        method()


class NullProgress:
    """Reports nothing; the default for library callers."""

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def finish(self) -> None:
        pass
