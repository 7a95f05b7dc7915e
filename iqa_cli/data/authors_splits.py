"""The authors' split protocols, computed on request from a cache's image list (never stored).

Each family first puts the cache's images into the order the authors' scripts saw them, then replays
their random calls on positions in that order:

* VT-IQA, IEIT, AL-IQA (the esnthere scripts). Their prep script orders the images (KonIQ-10k: rows
  sorted by `image_name`, `np.argsort`; LIVE Challenge: all 1,169 rows of the official metadata,
  the 7 training images included; SPAQ, CID2013, RBID and every other dataset: the metadata order,
  inferred since their prep scripts for those are not published), shuffles `arange(N)` after
  `np.random.seed(0)` and stores the first `int(0.8 N)` as X (train), the rest as Xtest.

  - ``authors_prep``: that split (what VT-IQA's `test_org` script and AL-IQA's index files build on);
  - ``vtiqa_chain_K``: VT-IQA's training loop: for i = 0..K join [X; Xtest], shuffle after
    `np.random.seed(i)`, first 80 % train (``vtiqa_chain_0`` is the released KonIQ model's split);
  - ``ieit_chain_K``: IEIT's loop: the prep split at i = 0, the same reshuffle for i = 1..K;
  - ``shuffle_S``: one `np.random.seed(S)` shuffle of [X; Xtest] (VT-IQA's LIVEW/CID2013 releases: 4,
    RBID: 2, SPAQ: 0).

* VIPNet (`train.py`): a list of units (images, or reference images for synthetic datasets) is
  shuffled in place with `random.seed(20220426 * i); random.shuffle(list)` for round i = 1, 2, ...
  (cumulatively: round i shuffles round i-1's list) and the first `round(0.8 N)` units train.
  ``vipnet_K`` is round K. Units: LIVE Challenge's 1,162 non-training images in metadata order
  (its loader slices `[7:]`), KonIQ-10k in CSV order (not sorted), KADID-10k's 81 references in
  sorted name order (`np.unique`), TID2013's 25 references in sorted order.

* Whole-dataset training (VIPNet's `train_cross_datast.py`): ``whole_K`` trains on every image of
  the dataset (LIVE Challenge: the 1,162 non-training images, as its loader) with no test part;
  K numbers the round (1, 2, ...), which changes only the seed. It is meant for `--watch`, which
  scores other datasets every epoch.

A cache that left images out (`--skip-bad`) cannot replay them: positions would shift, so that is an
error, as is a reference dataset for the esnthere protocols (their scripts split images, not
references).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from iqa_cli.data.records import TRAINING_IMAGE
from iqa_cli.errors import ConfigError, DataError

AUTHORS_PREP = "authors_prep"
PROTOCOL_SPLITS = (AUTHORS_PREP, "vtiqa_chain_K", "ieit_chain_K", "shuffle_S", "vipnet_K", "whole_K")
_PATTERN = re.compile(r"^(?:(authors_prep)|(vtiqa_chain|ieit_chain|shuffle|vipnet|whole)_(\d+))$")
WHOLE = "whole"  # `--split whole`: the rounds whole_1 .. whole_10 (train_cross_datast.py's train_test_round)
WHOLE_ROUNDS = 10
VIPNET_SEED = 20220426  # configs.py default `--seed`; round i seeds with VIPNET_SEED * i
VIPNET_DATASETS = ("livew", "koniq", "kadid10k", "tid2013")
ESNTHERE_DATASETS = ("koniq", "livew", "spaq", "cid2013", "rbid")  # the ones their scripts prepare


@dataclass(frozen=True)
class ImageList:
    """What the authors' orders depend on: the cache's dataset, names, flags and references."""

    dataset: str
    names: Sequence[str]
    flags: np.ndarray  # uint8 per image (TRAINING_IMAGE, ...)
    ref_ids: np.ndarray  # int per image, -1 where none
    skipped: int = 0  # images the cache left out of the dataset's list


def is_protocol_split(name: str) -> bool:
    """Whether `name` is one of the authors' computed split protocols."""
    return _PATTERN.match(str(name).strip().lower()) is not None


def _parse(name: str) -> tuple[str, int]:
    match = _PATTERN.match(str(name).strip().lower())
    if match is None:
        raise ConfigError(f"'{name}' is not a split protocol (expected one of {', '.join(PROTOCOL_SPLITS)})")
    if match.group(1):
        return AUTHORS_PREP, 0
    return match.group(2), int(match.group(3))


def _check_complete(images: ImageList, what: str) -> None:
    if images.skipped:
        raise DataError(
            f"{what} indexes the dataset's full image list, but this cache left {images.skipped} image(s) out "
            "(--skip-bad); prepare it again without missing images"
        )


def esnthere_order(images: ImageList) -> np.ndarray:
    """Cache index of each image in the esnthere prep scripts' order (before their seed-0 shuffle)."""
    n = len(images.names)
    _check_complete(images, "the VT-IQA/IEIT/AL-IQA split")
    if (np.asarray(images.ref_ids) >= 0).any():
        raise DataError(
            "the VT-IQA/IEIT/AL-IQA splits are for datasets without reference images; this cache has references "
            "(use its reference-disjoint random splits)"
        )
    if images.dataset == "livew" and not (np.asarray(images.flags) & TRAINING_IMAGE).any():
        raise DataError(
            "the VT-IQA/IEIT/AL-IQA splits index all 1,169 LIVE Challenge images, but this cache lacks the 7 training "
            "images (made by an older iqa); run `iqa prepare livew` again"
        )
    if images.dataset == "koniq":
        keys = np.asarray([str(name).rsplit("/", 1)[-1] for name in images.names])
        return np.argsort(keys, kind="stable").astype(np.int64)
    return np.arange(n, dtype=np.int64)


def esnthere_prep_order(images: ImageList) -> np.ndarray:
    """Cache index of each row of the authors' `[X; Xtest]` arrays (what AL-IQA's index files address)."""
    base = esnthere_order(images)
    return base[np.random.RandomState(0).permutation(len(base))]


def _esnthere_positions(kind: str, k: int, n: int) -> np.ndarray:
    """Positions (in the prep scripts' order) after the authors' loop; train = the first int(0.8 n)."""
    order = np.random.RandomState(0).permutation(n)  # np.random.seed(0); np.random.shuffle(arange(n))
    if kind == "shuffle":
        return order[np.random.RandomState(k).permutation(n)]
    if kind == AUTHORS_PREP:
        return order
    for i in range(0 if kind == "vtiqa_chain" else 1, k + 1):
        order = order[np.random.RandomState(i).permutation(n)]
    return order


def _vipnet_units(images: ImageList) -> list[np.ndarray]:
    """VIPNet's list of units, each an array of the cache indices it stands for, in the list's order."""
    dataset = images.dataset
    if dataset not in VIPNET_DATASETS:
        raise DataError(
            f"VIPNet's rounds are defined here for {', '.join(VIPNET_DATASETS)}; its list order for '{dataset}' "
            "is not reproducible from the authors' code (use the cache's random splits)"
        )
    _check_complete(images, "VIPNet's split")
    n = len(images.names)
    if dataset == "livew":
        flags = np.asarray(images.flags)
        return [np.array([i]) for i in range(n) if not flags[i] & TRAINING_IMAGE]
    if dataset == "koniq":
        return [np.array([i]) for i in range(n)]
    # Reference datasets: one unit per reference, sorted by the reference's name (np.unique in their loader).
    stems = [str(name).rsplit("/", 1)[-1].split("_")[0].lower() for name in images.names]
    keys = [stem[1:] if dataset == "tid2013" else stem for stem in stems]  # 'i01' -> '01' as their loader does
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return [np.asarray(groups[key], dtype=np.int64) for key in sorted(groups)]


def vipnet_round(units: int, k: int, seed: int = VIPNET_SEED) -> list[int]:
    """The unit list after round k of VIPNet's loop (rounds 1..k, each reshuffling the previous list)."""
    order = list(range(units))
    state = random.getstate()
    try:
        for i in range(1, k + 1):
            random.seed(seed * i)
            random.shuffle(order)
    finally:
        random.setstate(state)  # leave the caller's `random` untouched
    return order


def protocol_split(name: str, images: ImageList | int) -> dict[str, np.ndarray]:
    """Train/test cache indices (sorted, int64) of the authors' split `name` for this image list
    (an int n stands for n images of an unnamed dataset without references, in metadata order)."""
    if isinstance(images, (int, np.integer)):
        n = int(images)
        images = ImageList("", [str(i) for i in range(n)], np.zeros(n, np.uint8), np.full(n, -1))
    kind, k = _parse(name)
    if kind == WHOLE:
        if k < 1:
            raise DataError("whole-dataset rounds are numbered from 1 (whole_1 .. whole_10)")
        n = len(images.names)
        flags = np.asarray(images.flags, dtype=np.int64) if len(images.flags) else np.zeros(n, np.int64)
        train = np.flatnonzero((flags & TRAINING_IMAGE) == 0)
        return {"train": train.astype(np.int64), "test": np.empty(0, np.int64)}
    if kind == "vipnet":
        if k < 1:
            raise DataError("VIPNet's rounds are numbered from 1 (vipnet_1 .. vipnet_10)")
        units = _vipnet_units(images)
        order = vipnet_round(len(units), k)
        cut = int(round(0.8 * len(units)))
        train = np.concatenate([units[u] for u in order[:cut]]) if cut else np.empty(0, np.int64)
        test = np.concatenate([units[u] for u in order[cut:]]) if cut < len(units) else np.empty(0, np.int64)
    else:
        base = esnthere_order(images)
        positions = _esnthere_positions(kind, k, len(base))
        cut = int(len(base) * 0.8)
        train, test = base[positions[:cut]], base[positions[cut:]]
    return {"train": np.sort(train).astype(np.int64), "test": np.sort(test).astype(np.int64)}


def index_file_split(images: ImageList, ind_train: np.ndarray, ind_test: np.ndarray) -> dict[str, np.ndarray]:
    """Train/test cache indices from 0-based indices into the authors' `[X; Xtest]` (AL-IQA's index files)."""
    rows = esnthere_prep_order(images)
    parts = {}
    for part, raw in (("train", ind_train), ("test", ind_test)):
        indices = np.asarray(raw, dtype=np.int64).ravel()
        if indices.size and (indices.min() < 0 or indices.max() >= len(rows)):
            raise DataError(
                f"the index file's ind_{part} addresses rows up to {int(indices.max())}, but the cache has "
                f"{len(rows)} images (is it the dataset the file was made for?)"
            )
        parts[part] = np.sort(rows[indices]).astype(np.int64)
        repeated = np.unique(indices, return_counts=True)
        if (repeated[1] > 1).any():
            first = int(repeated[0][repeated[1] > 1][0])
            raise DataError(
                f"the index file's ind_{part} lists row {first} more than once ({int((repeated[1] > 1).sum())} "
                "repeated rows): an image would count twice"
            )
    if np.intersect1d(parts["train"], parts["test"]).size:
        raise DataError("the index file's ind_train and ind_test overlap")
    return parts


INDEX_FILE_PREFIX = "index_file:"  # split name of a test part read from an authors' index file


class PublishedIndexFile(NamedTuple):
    """What an authors' index file holds, so a file under its name is known to be theirs."""

    origin: str
    n_train: int
    n_test: int
    digest: str  # `index_file_digest` of its ind_train and ind_test (the indices, not the .mat bytes)


_ALIQA = "esnthere/AL-IQA @ 4583c46"
# Measured on the files in esnthere/AL-IQA's repository root (the four released KonIQ models' splits).
PUBLISHED_INDEX_FILES = {
    "koniq_rt05_index.mat": PublishedIndexFile(
        _ALIQA, 503, 9570, "6c3ae9109c9a4f35853a3332ae4e30dd308ef2fb3b8ddee5c8d65e09a2d8e825"
    ),
    "koniq_rt10_index.mat": PublishedIndexFile(
        _ALIQA, 1006, 9067, "f6478e07ffaf7528831f43e5f87547c3581ae551c62451538f4df94f898c1d33"
    ),
    "koniq_rt25_index.mat": PublishedIndexFile(
        _ALIQA, 2518, 7555, "1078085e689876fe89a38213266406bd92a16142fe13e342784fdb7d613ef69b"
    ),
    "koniq_rt80_index.mat": PublishedIndexFile(
        _ALIQA, 8058, 2015, "7855ca85913c8dfaa60928999e2c5d092b6d15bd8dc95537e11a06dd8fc0e600"
    ),
}


def index_file_digest(ind_train: np.ndarray, ind_test: np.ndarray) -> str:
    """SHA-256 of an index file's two sets of indices (sorted, int64): the same for the file saved again,
    by another writer or in another order, since each part is a set of images."""
    digest = hashlib.sha256(np.sort(np.asarray(ind_train, dtype="<i8").ravel()).tobytes())
    digest.update(b"|")
    digest.update(np.sort(np.asarray(ind_test, dtype="<i8").ravel()).tobytes())
    return digest.hexdigest()


def index_file_name(path: str | Path, ind_train: np.ndarray, ind_test: np.ndarray) -> str:
    """The name a test part read from this file is reported under: the published file's where it holds a
    published file's indices (whatever it is called now), else its own. A file named like a published one
    that holds other indices is refused: its test part would be reported as theirs (`index_file:NAME`) and
    compared with their published figures."""
    digest = index_file_digest(ind_train, ind_test)
    for name, known in PUBLISHED_INDEX_FILES.items():
        if known.digest == digest:
            return name
    published = PUBLISHED_INDEX_FILES.get(Path(path).name)
    if published is None:
        return Path(path).name
    counts = (int(ind_train.size), int(ind_test.size))
    how = (
        "the same counts as theirs, other indices"
        if counts == (published.n_train, published.n_test)
        else f"ind_train {counts[0]}, ind_test {counts[1]}; theirs {published.n_train}, {published.n_test}"
    )
    raise DataError(
        f"is named like the index file {published.origin} published, but holds other indices ({how}); "
        "use the authors' file, or give yours another name",
        path=path,
    )


def read_index_file(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """`ind_train`, `ind_test` (0-based, int64) of an authors' index file (AL-IQA's `koniq_rtXX_index.mat`)."""
    from iqa_cli.data.datasets._files import load_mat

    path = Path(path)
    if not path.is_file():
        raise DataError("index file not found (expected a .mat file with ind_train and ind_test)", path=path)
    content = load_mat(path, ["ind_train", "ind_test"])
    parts = []
    for key in ("ind_train", "ind_test"):
        array = np.asarray(content[key])
        if array.dtype.kind not in "iu" or array.ndim > 2 or (array.ndim == 2 and 1 not in array.shape):
            raise DataError(f"'{key}' must be a vector of integer indices, got {array.dtype} {array.shape}", path=path)
        parts.append(array.astype(np.int64).ravel())
    return parts[0], parts[1]
