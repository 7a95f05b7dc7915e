"""A stop asked of this process by SIGTERM or Ctrl-C, remembered so that no file is committed after it.

The CLI's signal handlers raise `Terminated` (SIGTERM) or `KeyboardInterrupt` (SIGINT) to unwind the
work. An exception raised from a signal handler is lost when the handler happens to run inside code
whose errors Python discards (a garbage-collection callback, a destructor: "Exception ignored in ...");
the process would then finish and commit its output as if never asked to stop. So the handlers also
record the request; every commit point (`atomic_path`, the distorted set's and the weights store's
renames) and the CLI's exit check it, and a training's stop request takes it over (it stops at a step,
with its state saved).
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_requested_by: list[str] = []  # the first signal that asked; empty: no request


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler or `timeout`): unwinds like Ctrl-C, so temporary files are removed."""


def request_stop(signal_name: str = "SIGTERM") -> None:
    """Record a stop asked by `signal_name` ('SIGTERM' or 'SIGINT'); the first request is kept."""
    with _lock:
        if not _requested_by:
            _requested_by.append(signal_name)


def stop_requested() -> bool:
    return bool(_requested_by)


def stopped_by() -> str | None:
    """The signal that asked for the stop, or None."""
    return _requested_by[0] if _requested_by else None


def clear_stop() -> None:
    """Forget a request (an in-process caller's next command starts afresh)."""
    with _lock:
        _requested_by.clear()


def raise_if_stopped() -> None:
    """Raise the asking signal's exception when a stop was asked: call it just before a result is
    committed (`Terminated` for SIGTERM, `KeyboardInterrupt` for Ctrl-C)."""
    by = stopped_by()
    if by is not None:
        raise Terminated() if by != "SIGINT" else KeyboardInterrupt()
