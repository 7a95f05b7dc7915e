"""Work in a thread beside the forward: an iterator run a few items ahead of its consumer (batch
preparation), or one call whose result is waited for later (`in_thread`)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")
_END = object()  # the source is exhausted


class Prefetch(Generic[T]):
    """Iterates `source` in a daemon thread, at most `depth` items ahead. An exception raised by the
    source reaches the consumer in order; `close()` (or leaving the `with` block) stops the thread and
    closes the source, so a loop left early also shuts down what the source holds (decode processes)."""

    def __init__(self, source: Iterator[T], *, depth: int, name: str) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._work, args=(source,), name=name, daemon=True)
        self._thread.start()

    def _work(self, source: Iterator[T]) -> None:
        try:
            for item in source:
                if not self._put((item, None)):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it
            self._put((None, exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def _put(self, entry: Any) -> bool:
        """Queue `entry` unless the consumer has stopped; False when it has."""
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Prefetch[T]:
        return self

    def __next__(self) -> T:
        if self._done:
            raise StopIteration
        entry = self._queue.get()
        if entry is _END:
            self._done = True
            raise StopIteration
        item, error = entry
        if error is not None:
            self._done = True
            raise error
        return item

    def close(self) -> None:
        self._done = True
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetch[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def in_thread(function: Callable[..., T], *args: Any, name: str) -> Future[T]:
    """Start `function(*args)` in a thread now; `.result()` waits for it and re-raises its error (e.g. a
    network built while its views are made).

    Not a daemon: a command that fails while the thread runs exits only once the thread has finished.
    Python tore down the interpreter around a daemon thread still inside torch (building SSL-IQA's
    networks), and the process aborted ("terminate called without an active exception", exit 134)
    after printing its one-line error, so the error's exit code was lost."""
    future: Future[T] = Future()

    def work() -> None:
        try:
            future.set_result(function(*args))
        except BaseException as exc:  # handed to whoever waits on the result
            future.set_exception(exc)

    threading.Thread(target=work, name=name, daemon=False).start()
    return future
