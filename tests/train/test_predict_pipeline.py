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
    assert [[int(p.stem) for p, _ in batch] for batch, _ in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert [views["first"] for _, views in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert made_in == {"iqa-predict-views"}  # not the consumer's thread
    # a batch carries each file's name and size, not its decoded pixels (they are freed once viewed)
    assert all(not isinstance(x, np.ndarray) for batch, _ in batches for item in batch for x in item)


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


def test_views_made_ahead_are_bounded_by_bytes():
    from iqa_cli.train.predict import MAX_AHEAD, QUEUED_VIEW_BYTES, batches_ahead

    vtiqa = {"global_centre": (3, 224, 224), "test_mosaic": (3, 224, 224)}  # 301 KB per image
    assert batches_ahead(vtiqa, 16) == MAX_AHEAD  # 4.8 MB per batch: the whole start-up's worth
    assert batches_ahead(vtiqa, 1) == MAX_AHEAD
    big = {"rgb": (3, 2048, 2048)}  # 12.6 MB per image
    assert batches_ahead(big, 16) == 2  # never fewer than 2 (one scored, one being made)
    assert batches_ahead(big, 4) * 4 * 3 * 2048 * 2048 <= QUEUED_VIEW_BYTES


def test_an_array_is_sized_by_the_training_cache_s_policy_without_a_squash():
    from iqa_cli.data.resize import parse_policy
    from iqa_cli.train.predict import apply_policy

    portrait = np.zeros((400, 300, 3), dtype=np.uint8)
    fixed, short = parse_policy("512x384"), parse_policy("short:30")
    assert apply_policy(portrait, None) is portrait
    assert apply_policy(portrait, fixed).shape == (512, 384, 3)  # scaled to 384 on its shorter side
    assert apply_policy(np.zeros((300, 400, 3), dtype=np.uint8), fixed).shape == (384, 512, 3)
    assert apply_policy(portrait, short).shape == (40, 30, 3)
