"""A stop asked of this process by SIGTERM, remembered so that no file is committed after it.

The CLI's SIGTERM handler raises `Terminated` to unwind the work. An exception raised from a signal
handler can be lost when the handler happens to run inside code that discards errors (a destructor,
a C library's callback); the process would then finish and commit its output as if never asked to
stop. So the handler also records the request, and every commit point (`atomic_path`, the caches'
and the weights store's renames) and the CLI's exit check it.
"""

from __future__ import annotations

import threading

_requested = threading.Event()


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler or `timeout`): unwinds like Ctrl-C, so temporary files are removed."""


def request_stop() -> None:
    _requested.set()


def stop_requested() -> bool:
    return _requested.is_set()


def clear_stop() -> None:
    """Forget a request (an in-process caller's next command starts afresh)."""
    _requested.clear()


def raise_if_stopped() -> None:
    """Raise `Terminated` when a stop was asked: call it just before a result is committed."""
    if _requested.is_set():
        raise Terminated()
