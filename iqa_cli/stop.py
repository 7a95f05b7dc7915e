"""A stop asked of this process by SIGTERM, remembered so that no file is committed after it.

The CLI's SIGTERM handler raises `Terminated` to unwind the work. An exception raised from a signal
handler is lost when the handler happens to run inside code whose errors Python discards (a
garbage-collection callback, a destructor: "Exception ignored in ..."); the process would then finish
and commit its output as if never asked to stop. So the handler also records the request; every commit
point (`atomic_path`, the distorted set's and the weights store's renames) and the CLI's exit check it,
and a training's stop request takes it over (it stops at a step, with its state saved).
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
