"""Splits: seeded, reproducible, 80/20, reference-disjoint where asked, KonIQ official parts."""

from __future__ import annotations

import numpy as np
import pytest

from iqa_cli.data.authors_splits import is_protocol_split, protocol_split
from iqa_cli.data.splits import (
    official_split,
    random_split,
    random_splits,
    validation_split,
)
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


def _authors_loop(n: int, last: int, *, reshuffle_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """The training scripts' split loop (methods spec §0.4), literally: arrays of image ids in the
    prep cache's order, joined, reshuffled with np.random.seed(i), first 80 % to train."""
    np.random.seed(0)
    index = np.arange(n)
    np.random.shuffle(index)
    cut = int(0.8 * n)
    x, x_test = index[:cut], index[cut:]  # what the prep script writes into the cache (X, Xtest)
    for i in range(last + 1):
        if i == 0 and not reshuffle_first:
            continue
        x_all = np.concatenate([x, x_test])
        index = np.arange(len(x_all))
        np.random.seed(i)
        np.random.shuffle(index)
        x, x_test = x_all[index[: int(len(x_all) * 0.8)]], x_all[index[int(len(x_all) * 0.8) :]]
    return np.sort(x), np.sort(x_test)


@pytest.mark.parametrize("k", [0, 1, 4])
def test_chained_protocols_replay_the_authors_loops(k):
    n = 1169
    for name, reshuffle_first in ((f"vtiqa_chain_{k}", True), (f"ieit_chain_{k}", False)):
        parts = protocol_split(name, n)
        train, test = _authors_loop(n, k, reshuffle_first=reshuffle_first)
        assert np.array_equal(parts["train"], train) and np.array_equal(parts["test"], test), name
        _check_partition(parts["train"], parts["test"], n)
    # IEIT's split 0 is the prep split itself; VT-IQA reshuffles it.
    assert np.array_equal(protocol_split("ieit_chain_0", n)["test"], random_split(n, seed=0)[1])
    assert not np.array_equal(protocol_split("vtiqa_chain_0", n)["test"], random_split(n, seed=0)[1])


def test_single_shuffle_of_the_prep_order():
    n = 474
    np.random.seed(0)
    index = np.arange(n)
    np.random.shuffle(index)  # the prep order
    np.random.seed(4)
    again = np.arange(n)
    np.random.shuffle(again)
    order = index[again]
    parts = protocol_split("shuffle_4", n)
    assert np.array_equal(parts["test"], np.sort(order[int(0.8 * n) :]))
    assert np.array_equal(protocol_split("shuffle_0", n)["test"], protocol_split("vtiqa_chain_0", n)["test"])
    assert is_protocol_split("Shuffle_4") and not is_protocol_split("random_4") and not is_protocol_split("chain_1")
    with pytest.raises(ConfigError, match="not a split protocol"):
        protocol_split("chained_1", n)


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


def test_content_groups_join_references_and_byte_identical_files():
    from iqa_cli.data.splits import content_groups, copy_groups

    refs = np.array([0, 0, 1, 1, -1, -1, 2])
    distinct = np.arange(7, dtype=np.uint64) * 7919
    assert content_groups(refs, distinct) is refs  # no copies: the split is drawn exactly as before
    assert content_groups(None, distinct) is None and content_groups(refs, None) is refs
    digests = distinct.copy()
    digests[4] = digests[2]  # image 4 (no reference) is a copy of image 2 (reference 1)
    digests[6] = digests[0]  # reference 2's image is a copy of reference 0's: references 0 and 2 join
    groups = content_groups(refs, digests)
    together = [{0, 1, 6}, {2, 3, 4}, {5}]
    assert sorted(map(sorted, together)) == sorted(sorted(np.flatnonzero(groups == g).tolist()) for g in set(groups))
    alone = content_groups(None, digests)
    assert alone[4] == alone[2] and alone[6] == alone[0] and len(set(alone.tolist())) == 5
    names = [f"im{i}.png" for i in range(7)]
    assert copy_groups(digests, names) == [["im0.png", "im6.png"], ["im2.png", "im4.png"]]
    assert copy_groups(distinct, names) == []


def test_random_splits_keep_copies_on_one_side():
    from iqa_cli.data.splits import content_groups

    digests = np.arange(100, dtype=np.uint64)
    digests[[10, 20, 30]] = 5  # four files of one content
    groups = content_groups(None, digests)
    for parts in random_splits(100, count=20, seed=0, ref_ids=groups).values():
        _check_partition(parts["train"], parts["test"], 100)
        sides = {int(np.isin(i, parts["test"])) for i in (5, 10, 20, 30)}
        assert len(sides) == 1


def test_a_split_count_or_seed_beyond_what_can_be_drawn_is_refused_at_once():
    """`--splits 99999999999` drew splits until killed (minutes at full CPU, memory growing), and a split seed
    whose seed + k passed 2**32 - 1 ended in numpy's raw ValueError after the headers were read."""
    with pytest.raises(ConfigError, match="--splits: must be between 0 and 1000, got 99999999999"):
        random_splits(100, count=99_999_999_999)
    with pytest.raises(ConfigError, match=r"--split-seed: must be between 0 and 4294967294 \(split k draws"):
        random_splits(100, count=2, seed=2**32 - 1)
    with pytest.raises(ConfigError, match="--splits: must be between 0 and 1000, got -1"):
        random_splits(100, count=-1)
    assert list(random_splits(100, count=1, seed=2**32 - 1)) == ["random_0"]  # the last seed is usable
