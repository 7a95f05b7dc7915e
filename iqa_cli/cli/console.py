"""Terminal output for the CLI: a rich progress bar on a TTY, plain log lines otherwise."""

from __future__ import annotations

import errno
import logging
import os
import sys
import time
from typing import Any, ClassVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichBar

from iqa_cli.fsnames import printable
from iqa_cli.jsonio import dumps

# Results go to stdout, everything else (progress, logs, errors) to stderr, so `--json` output pipes cleanly.
# Off a terminal (a SLURM log, a pipe) tables are drawn at their full width: never cut to `random…`.
_FULL_WIDTH = 100_000
STDOUT_NAME = "standard output"


class _Stdout:
    """The current `sys.stdout` (a test runner swaps it), whose write errors name it: a `--json` redirected
    to a full disk said only "No space left on device", naming no file."""

    def write(self, text: str) -> int:
        try:
            return sys.stdout.write(text)
        except OSError as exc:
            raise _named(exc) from None

    def flush(self) -> None:
        try:
            sys.stdout.flush()
        except OSError as exc:
            raise _named(exc) from None

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding, ...: the stream's own
        return getattr(sys.stdout, name)


def _named(exc: OSError) -> OSError:
    return exc if exc.filename is not None else type(exc)(exc.errno, exc.strerror, STDOUT_NAME)


class _ResultsConsole(Console):
    def on_broken_pipe(self) -> None:
        # rich's own answer exits 1, the code of a failed command: the CLI leaves as a shell tool does
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE), STDOUT_NAME)


stdout = _Stdout()
out = _ResultsConsole(file=stdout, soft_wrap=True, width=None if sys.stdout.isatty() else _FULL_WIDTH)  # type: ignore[arg-type]
err = Console(stderr=True, soft_wrap=True)


def is_tty() -> bool:
    return sys.stderr.isatty()


def _new_bar(*, transient: bool) -> RichBar:
    """A rich progress display on stderr: description, bar, done/total, elapsed, remaining."""
    return RichBar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=transient,
    )


# `iqa -q` / `iqa -v`: the level of the core's messages (loggers `iqa_cli.*`); -q also hides the bars.
QUIET, NORMAL, VERBOSE = logging.WARNING, logging.INFO, logging.DEBUG


class ConsoleProgress:
    """Implements `iqa_cli.progress.Progress` for the CLI.

    On a terminal it draws a rich bar; when not on a TTY (SLURM logs, pipes) it prints a plain,
    timestamped line at most every `interval` seconds and at 25 % steps, so logs stay readable.
    The newest one also prints the core's log messages (`LogHandler`), above its bar.
    """

    active: ClassVar[ConsoleProgress | None] = None
    level: ClassVar[int] = NORMAL

    def __init__(self, *, quiet: bool = False, interval: float = 30.0, bar_lines: bool = True) -> None:
        """`bar_lines=False` (training): off a terminal, bars print nothing, only log lines (one per
        epoch); on a terminal, finished bars disappear instead of piling up."""
        self.quiet = quiet or ConsoleProgress.level >= QUIET
        ConsoleProgress.active = self
        self.interval = interval
        self.bar_lines = bar_lines
        self._bar: RichBar | None = None
        self._task: Any = None
        self._total: int | None = None
        self._done = 0
        self._desc = ""
        self._last = 0.0
        self._next_pct = 25
        self._t0 = 0.0
        self._live: RichBar | None = None  # a persistent bar holding the job's overall task (a training run)
        self._run_task: Any = None

    def overall(self, description: str, total: int | None, done: int) -> None:
        """One bar for the whole run (epochs, ETA) above the current epoch's bar; terminals only."""
        if self.quiet or not is_tty():
            return
        if self._live is None:
            self.finish()
            self._live = _new_bar(transient=True)
            self._live.start()
        if self._run_task is None:
            self._run_task = self._live.add_task(description, total=total, completed=done)
        else:
            self._live.update(self._run_task, description=description, total=total, completed=done)

    def end_overall(self) -> None:
        self.finish()
        if self._live is not None:
            self._live.stop()
        self._live, self._run_task = None, None

    def start(self, description: str, total: int | None) -> None:
        self.finish()
        self._desc, self._total, self._done = description, total, 0
        self._t0 = self._last = time.monotonic()
        self._next_pct = 25
        if self.quiet:
            return
        if not is_tty() and not self.bar_lines:
            return
        if self._live is not None:  # the step's bar goes under the run's bar, in the same display
            self._task = self._live.add_task(description, total=total)
            return
        if is_tty():
            self._bar = _new_bar(transient=not self.bar_lines)
            self._bar.start()
            self._task = self._bar.add_task(description, total=total)
        else:
            self._line(f"{description}: started" + (f" ({total} items)" if total else ""))

    def advance(self, n: int = 1) -> None:
        self._done += n
        if self.quiet:
            return
        if self._bar is not None:
            self._bar.advance(self._task, n)
            return
        if self._live is not None and self._task is not None:
            self._live.advance(self._task, n)
            return
        if not self.bar_lines:
            return
        now = time.monotonic()
        pct = 100 * self._done // self._total if self._total else None
        if (pct is not None and pct >= self._next_pct) or now - self._last >= self.interval:
            self._last = now
            if pct is not None:
                while self._next_pct <= pct:
                    self._next_pct += 25
            total = f"/{self._total}" if self._total else ""
            rate = self._done / max(now - self._t0, 1e-9)
            self._line(f"{self._desc}: {self._done}{total} ({rate:.1f}/s)")

    def log(self, message: str) -> None:
        """One message line, printed above the bar when one is drawn (also under --quiet: the log
        handler decides what is shown). A file name's control characters are shown escaped: one line."""
        display = self._bar if self._bar is not None else self._live
        if display is None:
            self._line(message)  # escapes, as it does for every plain line
        else:
            display.console.print(printable(message), markup=False, highlight=False)

    def finish(self) -> None:
        if self._live is not None and self._task is not None:
            self._live.remove_task(self._task)  # finished step bars do not pile up
            self._task = None
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self._total is not None and not self.quiet and self._desc and self.bar_lines:
            elapsed = time.monotonic() - self._t0
            self._line(f"{self._desc}: done {self._done} in {elapsed:.1f}s")
        self._desc = ""
        self._total = None

    @staticmethod
    def _line(message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        print(f"[{stamp}] {printable(message)}", file=sys.stderr, flush=True)


class LogHandler(logging.Handler):
    """Prints the core's log records: through the active progress display (above its bar), else as a
    plain timestamped line on stderr; warnings start with `warning:`."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname.lower()}: {message}"
            active = ConsoleProgress.active
            if active is not None:
                active.log(message)
            else:
                ConsoleProgress._line(message)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


_HANDLER = LogHandler()


def configure_logging(level: int) -> None:
    """Send the `iqa_cli` loggers' records at `level` and above to the console (once per process; a
    second call only changes the level). DDP ranks other than 0 show warnings only, so a message is
    printed once per job."""
    if int(os.environ.get("RANK", "0") or 0) != 0:
        level = max(level, QUIET)
    ConsoleProgress.level = level
    logger = logging.getLogger("iqa_cli")
    if _HANDLER not in logger.handlers:
        logger.addHandler(_HANDLER)
    logger.setLevel(level)


def print_json(obj: Any) -> None:
    """Machine-readable output: one strict JSON document on stdout (NaN and infinity become null)."""
    write_stdout(dumps(obj, indent=2) + "\n")


def write_stdout(text: str) -> None:
    """Plain text on stdout, flushed: a write error (a full disk, a closed pipe) is raised here, naming
    standard output, not lost at exit."""
    stdout.write(text)
    stdout.flush()
