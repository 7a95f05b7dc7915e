"""`iqa predict` makes the next batch's views in a thread while the current batch is scored."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from iqa_cli.train.predict import _prefetched_views


def _images(count: int, closed: list[bool] | None = None):
    try:
        for i in range(count):
            yield Path(f"{i}.jpg"), np.full((2, 2, 3), i, np.uint8), (2, 2)
    finally:
        if closed is not None:
            closed.append(True)


def test_batches_keep_the_input_order_and_their_views():
    made_in: set[str] = set()

    def make(arrays):
        made_in.add(threading.current_thread().name)
        return {"first": [int(a[0, 0, 0]) for a in arrays]}

    batches = list(_prefetched_views(_images(10), 4, make))
    assert [[int(p.stem) for p, _, _ in batch] for batch, _ in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [views["first"] for _, views in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert made_in == {"iqa-predict-views"}  # not the consumer's thread


def test_an_error_making_views_reaches_the_consumer():
    def make(arrays):
        raise ValueError("bad view")

    with pytest.raises(ValueError, match="bad view"):
        list(_prefetched_views(_images(3), 2, lambda arrays: make(arrays)))


def test_a_consumer_that_stops_early_closes_the_source():
    closed: list[bool] = []
    batches = _prefetched_views(_images(100, closed), 2, lambda arrays: {})
    next(batches)
    batches.close()  # e.g. a non-finite score raised while scoring the first batch
    assert closed == [True]
