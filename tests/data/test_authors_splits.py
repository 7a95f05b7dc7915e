"""The authors' splits equal a literal replay of their scripts' calls, on official-layout fixtures.

Each replay below copies what the authors' scripts do (numpy's legacy seeding and in-place shuffles,
Python's `random`), on image *names*, and the test compares the sets of names `iqa` puts in each part.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from iqa_cli.data.authors_splits import (
    PUBLISHED_INDEX_FILES,
    ImageList,
    index_file_name,
    index_file_split,
    protocol_split,
    read_index_file,
)
from iqa_cli.data.cache import build_cache, open_cache
from iqa_cli.data.cache_write import CacheOptions
from iqa_cli.data.datasets import get_dataset
from iqa_cli.data.records import TRAINING_IMAGE
from iqa_cli.errors import DataError
from tests.data.fixtures import FIXTURES

AUTHORS_ALIQA = Path(__file__).resolve().parents[2].parent / "shared" / "authors-data" / "aliqa"


def _cache(tmp_path, dataset: str, **fixture_options):
    expected = FIXTURES[dataset](tmp_path / "root", **fixture_options)
    out = tmp_path / f"{dataset}.h5"
    build_cache(get_dataset(dataset), expected.root, out, CacheOptions(workers=1, splits=3))
    return open_cache(out), expected


def _names(cache, indices) -> set[str]:
    return {cache.names[i] for i in indices}


def _esnthere_prep(names: list[str]) -> tuple[list[str], list[str]]:
    """data_preparation_example.py: (optionally sorted) names, seed-0 shuffle, first int(0.8 N) as X."""
    ind = np.arange(len(names))
    np.random.seed(0)
    np.random.shuffle(ind)
    cut = int(len(ind) * 0.8)
    return [names[i] for i in ind[:cut]], [names[i] for i in ind[cut:]]


def _chain(x: list[str], x_test: list[str], seeds) -> tuple[list[str], list[str]]:
    """The training scripts' loop: X = [X; Xtest], shuffled after np.random.seed(i), first 80 % train."""
    for i in seeds:
        x_all = x + x_test
        ind = np.arange(len(x_all))
        np.random.seed(i)
        np.random.shuffle(ind)
        cut = int(len(ind) * 0.8)
        x, x_test = [x_all[j] for j in ind[:cut]], [x_all[j] for j in ind[cut:]]
    return x, x_test


def test_livew_cache_keeps_all_rows_in_metadata_order_and_flags_the_seven(tmp_path):
    cache, expected = _cache(tmp_path, "livew")
    with cache:
        assert cache.names == expected.names and len(cache) == 17
        assert list(cache.flags[:7]) == [TRAINING_IMAGE] * 7 and not cache.flags[7:].any()
        # Seeded random splits use the 1,162 (here 10): the 7 are in no part.
        for name in cache.split_names():
            parts = cache.split(name)
            assert not (set(parts["train"]) | set(parts["test"])) & set(range(7))
            assert len(parts["train"]) + len(parts["test"]) == 10
        # The authors' splits use all rows in the metadata order (AllImages_release).
        x, x_test = _esnthere_prep(expected.names)
        prep = cache.split("authors_prep")
        assert _names(cache, prep["train"]) == set(x) and _names(cache, prep["test"]) == set(x_test)
        shuffled = _chain(x, x_test, [4])
        assert _names(cache, cache.split("shuffle_4")["test"]) == set(shuffled[1])
        for k in (0, 2):
            assert _names(cache, cache.split(f"vtiqa_chain_{k}")["test"]) == set(_chain(x, x_test, range(k + 1))[1])
            assert _names(cache, cache.split(f"ieit_chain_{k}")["test"]) == set(_chain(x, x_test, range(1, k + 1))[1])


def test_koniq_authors_splits_index_the_name_sorted_order(tmp_path):
    cache, expected = _cache(tmp_path, "koniq")
    with cache:
        assert cache.names == expected.names  # the cache keeps the CSV order ...
        bare = [n.rsplit("/", 1)[1] for n in expected.names]
        assert bare != sorted(bare)  # ... which the fixture does not sort
        folder = expected.names[0].rsplit("/", 1)[0]
        names = [f"{folder}/{n}" for n in np.asarray(bare)[np.argsort(np.asarray(bare))]]  # their argsort
        x, x_test = _esnthere_prep(names)
        prep = cache.split("authors_prep")
        assert _names(cache, prep["train"]) == set(x) and _names(cache, prep["test"]) == set(x_test)
        assert _names(cache, cache.split("vtiqa_chain_1")["test"]) == set(_chain(x, x_test, [0, 1])[1])
        # What the CSV order would give differs: the order matters.
        x_csv, x_test_csv = _esnthere_prep(expected.names)
        assert any(set(_chain(x_csv, x_test_csv, [s])[1]) != set(_chain(x, x_test, [s])[1]) for s in range(4))


def test_authors_splits_refuse_caches_that_cannot_replay_them(tmp_path):
    n = 20
    old_livew = ImageList("livew", [f"{i}.bmp" for i in range(n)], np.zeros(n, np.uint8), np.full(n, -1))
    with pytest.raises(DataError, match="lacks the 7 training images"):
        protocol_split("authors_prep", old_livew)
    skipped = ImageList("spaq", [f"{i}.jpg" for i in range(n)], np.zeros(n, np.uint8), np.full(n, -1), skipped=2)
    with pytest.raises(DataError, match="left 2 image"):
        protocol_split("shuffle_0", skipped)
    refs = ImageList(
        "kadid10k", [f"I{i // 5:02d}_01_01.png" for i in range(n)], np.zeros(n, np.uint8), np.arange(n) // 5
    )
    with pytest.raises(DataError, match="without reference images"):
        protocol_split("vtiqa_chain_0", refs)
    with pytest.raises(DataError, match="not reproducible"):
        protocol_split("vipnet_1", ImageList("csiq", ["a.png"] * 4, np.zeros(4, np.uint8), np.arange(4)))


def _vipnet_rounds(total_num_images: list[int], rounds: int) -> list[tuple[list[int], list[int]]]:
    """VIPNet train.py: the same list object shuffled in place, round i after random.seed(20220426 * i)."""
    out = []
    for i in range(1, rounds + 1):
        random.seed(20220426 * i)
        random.shuffle(total_num_images)
        cut = int(round(0.8 * len(total_num_images)))
        out.append((list(total_num_images[0:cut]), list(total_num_images[cut:])))
    return out


def test_vipnet_rounds_on_kadid_references_and_livew_images():
    # KADID-10k: 81 references x 5 images here (the real set has 125 per reference), the CSV sorted by name.
    names = [f"images/I{r:02d}_{t:02d}_01.png" for r in range(1, 82) for t in range(1, 6)]
    kadid = ImageList("kadid10k", names, np.zeros(len(names), np.uint8), np.repeat(np.arange(81), 5))
    im_ref = np.unique([n.split("/")[1].split("_")[0] + ".png" for n in names])  # their np.unique of ref_img
    for k, (train_refs, test_refs) in enumerate(_vipnet_rounds(list(range(81)), 3), start=1):
        parts = protocol_split(f"vipnet_{k}", kadid)
        assert len(train_refs) == 65 and len(test_refs) == 16
        want_test = {n for n in names if n.split("/")[1].split("_")[0] + ".png" in set(im_ref[test_refs])}
        assert {names[i] for i in parts["test"]} == want_test
    # LIVE Challenge: the loader drops the first 7 rows, so the units are the 1,162 in metadata order.
    n = 1169
    flags = np.zeros(n, np.uint8)
    flags[:7] = TRAINING_IMAGE
    livew = ImageList("livew", [f"{i}.bmp" for i in range(n)], flags, np.full(n, -1))
    for k, (train, test) in enumerate(_vipnet_rounds(list(range(1162)), 2), start=1):
        parts = protocol_split(f"vipnet_{k}", livew)
        assert len(train) == 930 and len(test) == 232
        assert np.array_equal(parts["test"], np.sort(np.asarray(test) + 7))
    state = random.getstate()
    protocol_split("vipnet_2", livew)
    assert random.getstate() == state  # the caller's random stream is left alone


def test_index_file_split_addresses_the_prep_order():
    # KonIQ-like names in a non-sorted order; the authors' arrays are [X; Xtest] of the sorted names.
    rng = np.random.RandomState(5)
    bare = [f"{v}.jpg" for v in rng.permutation(10**6)[:200] * 1000 + 7]
    koniq = ImageList("koniq", [f"1024x768/{b}" for b in bare], np.zeros(200, np.uint8), np.full(200, -1))
    x, x_test = _esnthere_prep(sorted(bare))
    rows = x + x_test  # np.concatenate([X, Xtest]) in their test script
    ind_test = rng.choice(200, size=150, replace=False)
    ind_train = np.setdiff1d(np.arange(200), ind_test)
    parts = index_file_split(koniq, ind_train, ind_test)
    assert {bare[i] for i in parts["test"]} == {rows[i] for i in ind_test}
    with pytest.raises(DataError, match="overlap"):
        index_file_split(koniq, ind_test[:3], ind_test[:5])
    with pytest.raises(DataError, match="addresses rows up to 250"):
        index_file_split(koniq, [0], [250])
    twice = np.concatenate([ind_test[:-1], ind_test[:1]])  # as many rows, one listed twice, one left out
    with pytest.raises(DataError, match=f"ind_test lists row {int(ind_test[0])} more than once"):
        index_file_split(koniq, ind_train, twice)


@pytest.mark.skipif(not AUTHORS_ALIQA.is_dir(), reason="../shared/authors-data/aliqa (the authors' index files) absent")
@pytest.mark.parametrize("name", sorted(PUBLISHED_INDEX_FILES))
def test_the_published_index_files_are_recognised_also_saved_again(tmp_path, name):
    from scipy.io import savemat

    ind_train, ind_test = read_index_file(AUTHORS_ALIQA / name)
    published = PUBLISHED_INDEX_FILES[name]
    assert (ind_train.size, ind_test.size) == (published.n_train, published.n_test)
    index_file_name(AUTHORS_ALIQA / name, ind_train, ind_test)
    again = tmp_path / name  # other .mat bytes (another writer, int32, another order), the same two sets
    reordered = {"ind_test": ind_test[::-1].astype(np.int32)[None, :], "ind_train": ind_train.astype(np.int32)[None, :]}
    savemat(again, reordered)
    index_file_name(again, *read_index_file(again))
    moved = np.concatenate([ind_train[1:], ind_test[:1]]), np.concatenate([ind_test[1:], ind_train[:1]])
    with pytest.raises(DataError, match="the same counts as theirs, other indices"):
        index_file_name(again, *moved)  # one image swapped between the parts


def test_whole_dataset_rounds_train_every_image_and_test_none():
    n = 20
    flags = np.zeros(n, np.uint8)
    flags[:3] = TRAINING_IMAGE  # LIVE Challenge's subject-training images stay out, as the loader's [7:]
    images = ImageList("livew", [f"{i}.bmp" for i in range(n)], flags, np.full(n, -1))
    parts = protocol_split("whole_4", images)
    assert np.array_equal(parts["train"], np.arange(3, n)) and parts["test"].size == 0
    assert np.array_equal(protocol_split("whole_1", 5)["train"], np.arange(5))
    with pytest.raises(DataError, match="numbered from 1"):
        protocol_split("whole_0", images)


def test_whole_names_the_ten_rounds_and_each_round_has_its_own_seed():
    from iqa_cli.train.config import EngineConfig
    from iqa_cli.train.data import make_parts, resolve_split_names
    from iqa_cli.train.trainer import _round_config

    class SixImages:  # what a cache does with a protocol split name: compute it from its image list
        def split(self, name):
            return protocol_split(name, 6)

    dataset = SixImages()
    assert resolve_split_names(dataset, "whole") == [f"whole_{k}" for k in range(1, 11)]
    parts = make_parts(dataset, "whole_2", select_on="val", val_fraction=0.2, seed=0)
    assert parts.select_on == "none" and parts.train.size == 6 and parts.val.size == 0 and parts.test.size == 0
    engine = EngineConfig(seed=3)
    assert [_round_config(engine, f"whole_{k}").seed for k in (1, 2)] == [3001, 3002]
    assert _round_config(engine, "random_0") is engine
