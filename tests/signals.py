"""A signal whose exception is lost: what the CLI must still honour (see `iqa_cli.stop`)."""

from __future__ import annotations

import os
import signal
import time


def lose_a_signal(signal_name: str = "SIGTERM") -> None:
    """Send this process `signal_name` and discard the exception its handler raises, as a destructor or a
    C library's callback would: only the remembered request is left."""
    try:
        os.kill(os.getpid(), getattr(signal, signal_name))
        time.sleep(5)  # the handler runs here, and raises
    except KeyboardInterrupt:
        pass


def lose_a_signal_in_a_destructor(signal_name: str = "SIGTERM") -> None:
    """Send `signal_name` while a destructor runs: Python itself discards the handler's exception there and
    reports it as "Exception ignored in ...", as CI saw for a weak-reference callback of importlib's."""

    class Dying:
        def __del__(self) -> None:
            os.kill(os.getpid(), getattr(signal, signal_name))
            time.sleep(5)  # the handler runs here, and raises into the destructor

    Dying()
