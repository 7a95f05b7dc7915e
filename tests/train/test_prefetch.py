"""Prefetch: an iterator run in a thread ahead of its consumer (training batches, predict's views)."""

from __future__ import annotations

import pytest

from iqa_cli.train.prefetch import Prefetch


def test_items_in_order_then_the_sources_error():
    def source():
        yield from range(5)
        raise ValueError("bad batch")

    seen = []
    with Prefetch(source(), depth=2, name="test-prefetch") as items, pytest.raises(ValueError, match="bad batch"):
        for item in items:
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_closing_early_stops_the_thread_and_closes_the_source():
    closed = []

    def source():
        try:
            yield from range(10**6)
        finally:
            closed.append(True)

    items = Prefetch(source(), depth=2, name="test-prefetch")
    assert next(items) == 0
    items.close()
    assert closed == [True] and not items._thread.is_alive()
    with pytest.raises(StopIteration):
        next(items)


def test_in_thread_returns_the_result_or_raises_the_error_where_it_is_waited_for():
    import threading

    from iqa_cli.train.prefetch import in_thread

    names: list[str] = []

    def work(x: int) -> int:
        names.append(threading.current_thread().name)
        return 2 * x

    assert in_thread(work, 21, name="iqa-test").result(timeout=10) == 42 and names == ["iqa-test"]

    def broken() -> None:
        raise ValueError("damaged")

    with pytest.raises(ValueError, match="damaged"):
        in_thread(broken, name="iqa-test").result(timeout=10)
