"""Progress reporting without a UI dependency.

The core reports progress through a `Progress` object; the CLI supplies one that draws a rich bar
on a terminal or prints plain log lines otherwise. The core never imports rich.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, description: str, total: int | None) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def log(self, message: str) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Reports nothing; the default for library callers."""

    def start(self, description: str, total: int | None) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def log(self, message: str) -> None:
        pass

    def finish(self) -> None:
        pass
