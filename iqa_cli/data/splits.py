"""Train/test splits stored in the cache, and the validation hold-out used by training.

Random splits (the protocol of datasets.md §15): split k of `count` uses the legacy NumPy generator
``RandomState(seed + k)`` to permute the images (or, for reference-disjoint datasets, the reference
images), and the first ``floor((1 - test_fraction) * n)`` go to train, the rest to test. These are
our clean seeded splits, not the authors' (those are named, see below). Index arrays are int64, sorted.

Reference-disjoint splits (LIVE, CSIQ, TID2013, KADID-10k): all images of one reference land on the
same side, so no scene is seen in training and test. Images without a reference (ref_id -1) count as
their own group.

KonIQ's official split comes from each record's ``official_set`` ('training'/'validation'/'test').

The authors' own split protocols (`authors_prep`, `vtiqa_chain_K`, `ieit_chain_K`, `shuffle_S`,
`vipnet_K`) are computed on request by `iqa_cli.data.authors_splits`, in the image order the authors'
scripts used, never stored.

Images flagged `TRAINING_IMAGE` (LIVE Challenge's 7 subject-training images) belong to no random
split: `random_K` are drawn over the other 1,162, the field's convention (pyiqa, hyperIQA).

Everything is a pure function of its inputs and seed: splits can be regenerated from the seed stored
in the cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from iqa_cli.errors import ConfigError, DataError
from iqa_cli.seeds import MAX_SEED

RANDOM_PREFIX = "random_"
# More stored splits than any protocol uses (the papers run 10) would only fill the cache and take as long
# to draw: a typo such as `--splits 1000000000` is refused before any work, never left running.
MAX_SPLITS = 1000
OFFICIAL = "official"
# Record.official_set spellings -> part names in the cache.
_OFFICIAL_PARTS = {
    "training": "train",
    "train": "train",
    "validation": "val",
    "val": "val",
    "test": "test",
    "testing": "test",
}


def _train_count(n: int, test_fraction: float) -> int:
    # floor with a small tolerance so 0.8 * 1000 is 800, not 799 (binary fractions).
    return int(math.floor((1.0 - test_fraction) * n + 1e-9))


def _check_fraction(fraction: float, what: str) -> None:
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"{what} must be between 0 and 1 (exclusive), got {fraction}")


def _groups(n: int, ref_ids: np.ndarray | None) -> np.ndarray:
    """A group id per image: its reference, or a fresh id for images without one."""
    if ref_ids is None:
        return np.arange(n, dtype=np.int64)
    ref_ids = np.asarray(ref_ids, dtype=np.int64)
    if ref_ids.shape != (n,):
        raise ValueError(f"ref_ids has shape {ref_ids.shape}, expected ({n},)")
    groups = ref_ids.copy()
    lonely = groups < 0
    groups[lonely] = groups.max(initial=-1) + 1 + np.arange(int(lonely.sum()))
    return groups


def content_groups(ref_ids: np.ndarray | None, file_digests: np.ndarray | None) -> np.ndarray | None:
    """The groups a split keeps on one side: an image's reference (`ref_ids`, -1: none) joined with every
    byte-identical copy of its file (equal `file_digests`), transitively. Without copies it is `ref_ids`
    unchanged (None: every image its own group), so caches without copies split exactly as before."""
    if file_digests is None:
        return ref_ids
    digests = np.asarray(file_digests, dtype=np.uint64)
    distinct, digest_node = np.unique(digests, return_inverse=True)
    if distinct.size == digests.size:
        return ref_ids
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = digests.size
    images = np.arange(n)
    rows, cols = [images], [n + digest_node.reshape(-1)]
    nodes = n + distinct.size
    if ref_ids is not None:
        refs = np.asarray(ref_ids, dtype=np.int64)
        has_ref = refs >= 0
        _, ref_node = np.unique(refs[has_ref], return_inverse=True)
        rows.append(images[has_ref])
        cols.append(nodes + ref_node.reshape(-1))
        nodes += int(ref_node.max(initial=-1)) + 1
    row, col = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(row.size, dtype=np.int8), (row, col)), shape=(nodes, nodes))
    _, labels = connected_components(graph, directed=False)
    return np.asarray(labels[:n], dtype=np.int64)


def copy_groups(file_digests: np.ndarray, names: Sequence[str]) -> list[list[str]]:
    """The names of each set of byte-identical files (two or more), each set and the sets in image order."""
    digests = np.asarray(file_digests, dtype=np.uint64)
    _, first, inverse, counts = np.unique(digests, return_index=True, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    by_group = np.argsort(inverse, kind="stable")  # images of one digest together, in image order
    members = np.split(by_group, np.cumsum(counts)[:-1])
    shared = np.flatnonzero(counts > 1)
    ordered = shared[np.argsort(first[shared])]
    return [[str(names[int(i)]) for i in members[g]] for g in ordered]


def _split_groups(
    groups: np.ndarray, test_fraction: float, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """Permute the distinct groups; images of the first (1 - test_fraction) share of groups -> train."""
    distinct = np.unique(groups)
    order = rng.permutation(len(distinct))
    in_train = np.isin(groups, distinct[order[: _train_count(len(distinct), test_fraction)]])
    return np.flatnonzero(in_train).astype(np.int64), np.flatnonzero(~in_train).astype(np.int64)


def random_split(
    n: int, *, seed: int, test_fraction: float = 0.2, ref_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One seeded train/test split of `n` images; reference-disjoint when `ref_ids` is given."""
    _check_fraction(test_fraction, "the test fraction")
    rng = np.random.RandomState(seed)
    if ref_ids is None:
        order = rng.permutation(n)
        cut = _train_count(n, test_fraction)
        return np.sort(order[:cut]).astype(np.int64), np.sort(order[cut:]).astype(np.int64)
    return _split_groups(_groups(n, ref_ids), test_fraction, rng)


def check_split_count(count: int, seed: int) -> None:
    """ConfigError (naming --splits or --split-seed) unless `count` splits from `seed` can be drawn."""
    if not 0 <= count <= MAX_SPLITS:
        raise ConfigError(f"--splits: must be between 0 and {MAX_SPLITS}, got {count}")
    if seed < 0 or seed + max(count - 1, 0) > MAX_SEED:
        high = MAX_SEED - max(count - 1, 0)
        why = f" (split k draws with seed + k, a 32-bit seed, for {count} splits)" if count > 1 else ""
        raise ConfigError(f"--split-seed: must be between 0 and {high}{why}, got {seed}")


def random_splits(
    n: int,
    *,
    count: int = 10,
    seed: int = 0,
    test_fraction: float = 0.2,
    ref_ids: np.ndarray | None = None,
    unit: str | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """`count` splits named random_0..random_{count-1}; split k uses seed + k. `unit` names what a group
    of `ref_ids` is, in the error for too few (default: a reference image, or an image)."""
    check_split_count(count, seed)
    if count == 0:
        return {}
    _check_fraction(test_fraction, "the test fraction")
    groups = _groups(n, ref_ids)
    distinct = len(np.unique(groups))
    unit = (unit or ("reference image" if ref_ids is not None else "image")) + ("" if distinct == 1 else "s")
    if _train_count(distinct, test_fraction) < 1 or _train_count(distinct, test_fraction) >= distinct:
        raise DataError(
            f"cannot split {distinct} {unit} {1 - test_fraction:.0%}/{test_fraction:.0%} into non-empty "
            "train and test parts (use --splits 0 to write no splits)"
        )
    out = {}
    for k in range(count):
        train, test = random_split(n, seed=seed + k, test_fraction=test_fraction, ref_ids=ref_ids)
        out[f"{RANDOM_PREFIX}{k}"] = {"train": train, "test": test}
    return out


def official_split(official_sets: Sequence[str | None]) -> dict[str, np.ndarray] | None:
    """KonIQ-style official parts from each record's `official_set`, or None when no record has one.

    Records without a set (None or '') belong to no part; unknown set names are an error.
    """
    if not any(official_sets):
        return None
    parts: dict[str, list[int]] = {}
    for index, value in enumerate(official_sets):
        if not value:
            continue
        part = _OFFICIAL_PARTS.get(str(value).strip().lower())
        if part is None:
            raise DataError(f"unknown official set {value!r} (expected training, validation or test)")
        parts.setdefault(part, []).append(index)
    return {name: np.asarray(sorted(indices), dtype=np.int64) for name, indices in parts.items()}


def validation_split(
    train_idx: np.ndarray, fraction: float, seed: int, *, ref_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Carve a validation part out of a training part: returns (rest of train, val), both sorted.

    About `fraction` of `train_idx` (at least one image, and at least one image left to train on)
    goes to validation, chosen by ``RandomState(seed)``. Pass `ref_ids` (the cache's full ref_ids
    array, indexed like the images) for reference-disjoint datasets: then whole references move.
    """
    train_idx = np.asarray(train_idx, dtype=np.int64)
    _check_fraction(fraction, "the validation fraction")
    rng = np.random.RandomState(seed)
    if train_idx.size < 2:
        return np.sort(train_idx), np.empty(0, dtype=np.int64)
    if ref_ids is None:
        order = rng.permutation(train_idx.size)
        n_val = min(train_idx.size - 1, max(1, int(math.floor(fraction * train_idx.size + 0.5))))
        return np.sort(train_idx[order[n_val:]]), np.sort(train_idx[order[:n_val]])
    ref_ids = np.asarray(ref_ids, dtype=np.int64)
    groups = _groups(ref_ids.size, ref_ids)
    distinct = np.unique(groups[train_idx])
    if distinct.size < 2:
        return np.sort(train_idx), np.empty(0, dtype=np.int64)
    order = rng.permutation(distinct.size)
    n_val = min(distinct.size - 1, max(1, int(math.floor(fraction * distinct.size + 0.5))))
    in_val = np.isin(groups[train_idx], distinct[order[:n_val]])
    return np.sort(train_idx[~in_val]), np.sort(train_idx[in_val])
