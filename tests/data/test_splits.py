"""Splits: seeded, reproducible, 80/20, reference-disjoint where asked, KonIQ official parts."""

from __future__ import annotations

import numpy as np
import pytest

from iqa_cli.data.splits import official_split, random_split, random_splits, validation_split
from iqa_cli.errors import ConfigError, DataError


def _check_partition(train, test, n):
    assert train.dtype == np.int64 and test.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(test) > 0)  # sorted, unique
    assert not np.intersect1d(train, test).size
    assert np.array_equal(np.union1d(train, test), np.arange(n))


def test_ten_seeded_80_20_splits():
    splits = random_splits(1169, seed=0)
    assert list(splits) == [f"random_{k}" for k in range(10)]
    for parts in splits.values():
        _check_partition(parts["train"], parts["test"], 1169)
        assert (parts["train"].size, parts["test"].size) == (935, 234)  # int(0.8 * 1169) train, as the authors
    assert not np.array_equal(splits["random_0"]["test"], splits["random_1"]["test"])


def test_reproducible_from_the_seed():
    first = random_splits(500, count=3, seed=7, test_fraction=0.3)
    again = random_splits(500, count=3, seed=7, test_fraction=0.3)
    for name in first:
        for part in ("train", "test"):
            assert np.array_equal(first[name][part], again[name][part])
    other = random_splits(500, count=1, seed=8, test_fraction=0.3)
    assert not np.array_equal(first["random_0"]["test"], other["random_0"]["test"])
    assert np.array_equal(first["random_1"]["test"], other["random_0"]["test"])  # split k uses seed + k
    assert first["random_0"]["test"].size == 150


def test_split_zero_is_the_esnthere_prep_split():
    n = 1169
    np.random.seed(0)
    order = np.arange(n)
    np.random.shuffle(order)
    train, test = random_split(n, seed=0)
    assert np.array_equal(train, np.sort(order[: int(0.8 * n)]))
    assert np.array_equal(test, np.sort(order[int(0.8 * n) :]))


def test_reference_disjoint():
    ref_ids = np.repeat(np.arange(29), 27)[:779]  # LIVE-like: 29 references, many versions each
    ref_ids[::50] = -1  # a few images without a reference are their own group
    splits = random_splits(ref_ids.size, seed=3, ref_ids=ref_ids)
    for parts in splits.values():
        train, test = parts["train"], parts["test"]
        _check_partition(train, test, ref_ids.size)
        train_refs, test_refs = set(ref_ids[train]) - {-1}, set(ref_ids[test]) - {-1}
        assert not train_refs & test_refs
    lonely = np.flatnonzero(ref_ids == -1)
    groups = 29 + lonely.size
    expected_train_groups = int(0.8 * groups + 1e-9)
    for parts in splits.values():
        train = parts["train"]
        assert len(set(ref_ids[train]) - {-1}) + np.isin(train, lonely).sum() == expected_train_groups


def test_too_few_images_and_counts():
    assert random_splits(10, count=0) == {}
    with pytest.raises(DataError, match="--splits 0"):
        random_splits(1, count=2)
    with pytest.raises(DataError, match="1 reference image "):
        random_splits(10, ref_ids=np.zeros(10, dtype=np.int64))  # one reference cannot be split
    with pytest.raises(ConfigError):
        random_splits(10, test_fraction=1.5)
    with pytest.raises(ConfigError):
        random_splits(10, count=-1)


def test_official_split():
    sets = ["training", "test", "validation", "training", None, "Test"]
    parts = official_split(sets)
    assert {k: v.tolist() for k, v in parts.items()} == {"train": [0, 3], "test": [1, 5], "val": [2]}
    assert official_split([None, None]) is None
    with pytest.raises(DataError, match="unknown official set"):
        official_split(["training", "holdout"])


def test_validation_split():
    train = np.arange(0, 200, 2)
    rest, val = validation_split(train, 0.1, seed=5)
    assert val.size == 10 and rest.size == 90
    assert np.array_equal(np.union1d(rest, val), train) and not np.intersect1d(rest, val).size
    again = validation_split(train, 0.1, seed=5)
    assert np.array_equal(again[1], val)
    assert not np.array_equal(validation_split(train, 0.1, seed=6)[1], val)
    rest, val = validation_split(np.array([4, 9]), 0.01, seed=0)
    assert val.size == 1 and rest.size == 1  # at least one each way
    rest, val = validation_split(np.array([4]), 0.2, seed=0)
    assert val.size == 0 and rest.tolist() == [4]


def test_validation_split_keeps_references_together():
    ref_ids = np.repeat(np.arange(20), 5)
    train = np.flatnonzero(ref_ids < 16)
    rest, val = validation_split(train, 0.25, seed=1, ref_ids=ref_ids)
    assert not set(ref_ids[rest]) & set(ref_ids[val])
    assert len(set(ref_ids[val])) == 4 and val.size == 20
    assert np.array_equal(np.union1d(rest, val), train)
