"""What training and evaluation read: a prepared cache (or anything with its interface) and its splits.

A dataset object offers `read_images(indices) -> uint8 (n, H, W, 3)` (images zero-padded to a common
H x W), `sizes` (n, 2) with each image's valid (h, w), native `scores`, `attrs` (dataset, score_type,
native_range, lower_better, ...), `split_names()`, `split(name) -> {'train', 'test'[, 'val']}` and
`len()`. `iqa_cli.data.cache.open_cache` returns one; tests may pass an in-memory object.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from iqa_cli.data.authors_splits import PROTOCOL_SPLITS, WHOLE, WHOLE_ROUNDS, is_protocol_split
from iqa_cli.errors import ConfigError, DataError

RANDOM_PREFIX = "random_"  # the cache's name for its seeded random splits (random_0, random_1, ...)


class DatasetLike(Protocol):
    sizes: np.ndarray
    scores: np.ndarray
    attrs: dict[str, Any]

    def read_images(self, indices: np.ndarray) -> np.ndarray: ...

    def split_names(self) -> list[str]: ...

    def split(self, name: str) -> dict[str, np.ndarray]: ...

    def __len__(self) -> int: ...


def open_dataset(name_or_path: str | Path) -> tuple[DatasetLike, Path]:
    """Open a prepared cache by dataset name or path; empty caches are refused."""
    from iqa_cli.data.cache import open_cache
    from iqa_cli.home import resolve_cache

    path = resolve_cache(name_or_path)
    dataset = open_cache(path)
    if len(dataset) == 0:
        close_dataset(dataset)
        raise DataError("the cache holds no images (expected a cache written by `iqa prepare`)", path=path)
    return dataset, path


def close_dataset(dataset: Any) -> None:
    close = getattr(dataset, "close", None)
    if callable(close):
        close()


def dataset_name(dataset: DatasetLike, fallback: str = "dataset") -> str:
    return str(dataset.attrs.get("dataset") or fallback)


def read_images_ordered(dataset: DatasetLike, indices: np.ndarray) -> np.ndarray:
    """`read_images` in the requested order; the cache is read in increasing index order (fast for HDF5)."""
    indices = np.asarray(indices, dtype=np.int64)
    order = np.argsort(indices, kind="stable")
    images = dataset.read_images(indices[order])
    out = np.empty_like(images)
    out[order] = images
    return out


def resolve_split_names(dataset: DatasetLike, split: str | None, *, source: str = "cache") -> list[str]:
    """`--split K|all` -> the split names to use.

    K is a stored split's name (`random_3`, `official`), a number (`3` = `random_3`) or one of the
    authors' computed protocols (`vtiqa_chain_K`, `ieit_chain_K`, `shuffle_S`). `all` is every
    random split (the papers' repeated 80/20 protocol; the median is reported), or every split when
    the cache has no random ones. Default: the first split the cache lists.
    """
    if split is not None and split.strip().lower() == WHOLE:
        names = [f"{WHOLE}_{k}" for k in range(1, WHOLE_ROUNDS + 1)]
        dataset.split(names[0])
        return names
    if split is not None and is_protocol_split(split):
        dataset.split(split)  # computed by the dataset; one clear line where it cannot be
        return [split.strip().lower()]
    names = [str(n) for n in dataset.split_names()]
    if not names:
        raise DataError(f"the {source} defines no train/test splits")
    if split is None:
        return names[:1]
    if split == "all":
        random = [n for n in names if n.startswith(RANDOM_PREFIX)]
        return random or names
    for candidate in (split, f"{RANDOM_PREFIX}{split}"):
        if candidate in names:
            return [candidate]
    raise DataError(
        f"split '{split}' does not exist in the {source} (available: {', '.join(names)}, "
        f"{', '.join(PROTOCOL_SPLITS)}, or all)"
    )


def split_digest(dataset: DatasetLike, parts: dict[str, np.ndarray]) -> str:
    """SHA-256 (first 16 hex digits) of a split's image names, part by part: the identity of what a
    model was trained and tested on. A re-prepared cache whose split of the same name holds other
    images has another digest."""
    import hashlib

    names = getattr(dataset, "names", None)
    digest = hashlib.sha256()
    for part in sorted(parts):
        digest.update(f"[{part}]\n".encode())
        for index in np.sort(np.asarray(parts[part], dtype=np.int64)):
            label = str(names[index]) if names is not None else str(int(index))
            digest.update(label.encode("utf-8", "surrogateescape") + b"\n")
    return digest.hexdigest()[:16]


def view_sides(view_shapes: dict[str, tuple[int, ...]]) -> list[tuple[int, int]]:
    """(height, width) of each image-like view in a recipe's `view_shapes` (other views, such as VIPNet's
    stored sizes, are left out)."""
    return [(int(shape[-2]), int(shape[-1])) for shape in view_shapes.values() if len(shape) >= 3]


def upscaled_views_note(dataset: DatasetLike, views: Sequence[tuple[int, int]], method: str) -> str | None:
    """Why `method`'s views of `dataset` are not the protocol's, or None: the cache holds reduced images
    (prepared smaller than its dataset's default size, such as `--size 512x384` for KonIQ, or from a
    smaller official release, such as KonIQ's 512x384 folder) that are smaller, along either axis, than a
    view (height, width) the method resizes them to (VT-IQA's 768 px square, SSL-IQA's 512 px high view),
    so the views are upscaled from them where the method's authors resized the full-size images."""
    from iqa_cli.data.datasets import get_dataset, is_dataset_name
    from iqa_cli.data.resize import parse_policy

    sizes = np.asarray(dataset.sizes)
    if not views or sizes.ndim != 2 or not sizes.size:
        return None
    height, width = int(np.median(sizes[:, 0])), int(np.median(sizes[:, 1]))
    larger = [(h, w) for h, w in views if height < h or width < w]
    if not larger:
        return None
    view_h, view_w = max(larger, key=lambda side: side[0] * side[1])
    stored = str(dataset.attrs.get("resize", "") or "")
    name = str(dataset.attrs.get("dataset", "") or "")
    spec = get_dataset(name) if name and is_dataset_name(name) else None
    default = spec.default_resize if spec is not None else "none"
    try:
        resized = bool(stored) and parse_policy(stored) != parse_policy(default)
    except ConfigError:
        resized = False
    full = reduced_release(dataset)
    if resized:
        cause = f"is stored at size {stored} (its default: {default})"
    elif full is not None:
        cause = f"holds a reduced release of its images (the full-size ones have {full[1]} px)"
    else:
        return None
    view = f"{view_h} px" if view_h == view_w else f"{view_w}x{view_h} px"
    return (
        f"{name or 'this cache'} {cause}, about {width}x{height} px, smaller than the {view} view {method} "
        "makes: the views are upscaled from the reduced images, where the method resizes the full-size ones; "
        f"prepare {name or 'it'} from its full-size images at its default size for the protocol's views"
    )


def reduced_release(dataset: DatasetLike) -> tuple[int, int] | None:
    """(largest side stored, the full-size images' largest side) when the cache was prepared from a smaller
    official release of its dataset (KonIQ-10k's 512x384 folder) at a size policy that keeps what it reads;
    None otherwise."""
    from iqa_cli.data.datasets import get_dataset, is_dataset_name

    sizes = np.asarray(dataset.sizes)
    name = str(dataset.attrs.get("dataset", "") or "")
    if sizes.ndim != 2 or not sizes.size or not name or not is_dataset_name(name):
        return None
    full = get_dataset(name).full_side
    largest = int(np.median(sizes.max(axis=1)))
    return (largest, full) if full is not None and largest < full else None


def left_out_images(dataset: DatasetLike) -> int:
    """How many images of its dataset's list the cache left out (`iqa prepare --skip-bad`)."""
    try:
        return max(0, int(dataset.attrs.get("skipped") or 0))
    except (TypeError, ValueError):
        return 0


def left_out_note(dataset: DatasetLike, name: str) -> str | None:
    """A warning when the cache left images out: its figures are then on a part of the dataset only, which
    nothing else in a result says (a KonIQ-10k figure on 10,000 of its 10,073 images reads as the usual one)."""
    skipped = left_out_images(dataset)
    if not skipped:
        return None
    kept = len(dataset)
    return (
        f"{name} left out {skipped} of its {kept + skipped} images (prepared with --skip-bad; "
        f"`iqa prepare inspect {name}` lists them): these figures come from its other {kept} images only, "
        "not from the whole dataset"
    )


def images_digest(dataset: DatasetLike) -> str:
    """SHA-256 (first 16 hex digits) of every image's name and score: the same for a copy of a cache
    prepared again under another name or with other splits, and different for another dataset whose
    files happen to share names (recorded in checkpoints, so `--cross` onto a copy of the training
    data is recognised)."""
    import hashlib

    digest = hashlib.sha256(split_digest(dataset, {"images": np.arange(len(dataset))}).encode())
    digest.update(np.ascontiguousarray(np.asarray(dataset.scores, dtype="<f8")).tobytes())
    return digest.hexdigest()[:16]


def whole_dataset_test(dataset: DatasetLike, skip_training_images: bool) -> np.ndarray:
    """The images a whole-dataset test scores (`--cross`, `--watch`): all of them, or, with
    `skip_training_images` (`Recipe.cross_skips_training_images`), all but those flagged TRAINING_IMAGE."""
    from iqa_cli.data.records import TRAINING_IMAGE

    n = len(dataset)
    flags = np.asarray(getattr(dataset, "flags", np.zeros(0, np.uint8)), dtype=np.int64)
    if skip_training_images and flags.size == n:
        return np.flatnonzero((flags & TRAINING_IMAGE) == 0).astype(np.int64)
    return np.arange(n, dtype=np.int64)


SEEN_FILES_KEY = "seen_files"  # checkpoint metadata: the file digests of the images a model trained on
# Checkpoint metadata of a model whose training images came from outside its split's training part (AL-IQA's
# `--pool all`): why no test part of that dataset is unseen by it.
TRAINED_BEYOND_SPLIT_KEY = "trained_beyond_split"


def seen_files(dataset: DatasetLike, *parts: np.ndarray) -> np.ndarray | None:
    """The distinct `file_digests` of the images of `parts` (what a model trains or selects on), sorted;
    for a distorted-image cache, those of the reference files its images were made from (VIPNet's DPM
    sees their content); None for a cache without digests."""
    indices = np.concatenate([np.asarray(part, dtype=np.int64) for part in parts]) if parts else np.empty(0, np.int64)
    digests = getattr(dataset, "file_digests", None)
    if digests is not None:
        return np.unique(np.asarray(digests, dtype=np.uint64)[indices])
    made_from = reference_files_of(dataset, indices)
    if made_from is None or (made_from == 0).any():  # a reference not read: what the model saw is not all known
        return None
    return np.unique(made_from)


def reference_files_of(dataset: DatasetLike, indices: np.ndarray) -> np.ndarray | None:
    """Per image at `indices`, the digest of the reference file it was made from (0: none, or not read);
    None for a cache that keeps no reference digests."""
    references, ref_ids = getattr(dataset, "reference_digests", None), getattr(dataset, "ref_ids", None)
    if references is None or ref_ids is None:
        return None
    references = np.asarray(references, dtype=np.uint64)
    ids = np.asarray(ref_ids, dtype=np.int64)[np.asarray(indices, dtype=np.int64)]
    known = (ids >= 0) & (ids < references.size)
    out = np.zeros(ids.size, dtype=np.uint64)
    out[known] = references[ids[known]]
    return out


def pack_seen_files(seen: np.ndarray) -> str:
    """`seen_files` as base64 for a checkpoint's metadata (8 bytes an image: 86 KB for KonIQ-10k's
    training part); `read_seen_files` reads it back."""
    import base64

    return base64.b64encode(np.asarray(seen, dtype="<u8").tobytes()).decode("ascii")


def read_seen_files(meta: dict[str, Any]) -> np.ndarray | None:
    """`seen_files` back from a checkpoint's metadata; None when it was not recorded (or is unreadable)."""
    import base64
    import binascii

    raw = meta.get(SEEN_FILES_KEY)
    if not isinstance(raw, str):
        return None
    try:
        data = base64.b64decode(raw.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    if len(data) % 8:
        return None
    return np.frombuffer(data, dtype="<u8").astype(np.uint64)


def copies_of_seen(dataset: DatasetLike, seen: np.ndarray | None, indices: np.ndarray) -> np.ndarray:
    """The images at `indices` whose files are byte-identical to one a model trained on (`seen`, from
    `read_seen_files`), or, in a full-reference dataset, were made from a reference file it trained on
    (VIPNet's DPM pretrained on the references); empty when either side has no digests."""
    indices = np.asarray(indices, dtype=np.int64)
    if seen is None or not indices.size:
        return np.empty(0, dtype=np.int64)
    hit = np.zeros(indices.size, dtype=bool)
    digests = getattr(dataset, "file_digests", None)
    if digests is not None:
        hit |= np.isin(np.asarray(digests, dtype=np.uint64)[indices], seen)
    made_from = reference_files_of(dataset, indices)
    if made_from is not None:
        hit |= (made_from != 0) & np.isin(made_from, seen)
    return indices[hit]


def stored_split_digests(dataset: DatasetLike) -> dict[str, str]:
    """`split_digest` of each split the cache stores (`random_K`, `official`): what its `--split-seed` and
    `--test-fraction` made. Runs record it, so runs on caches with other splits under the same names are
    not joined as one protocol (`iqa runs combine`)."""
    return {name: split_digest(dataset, dataset.split(name)) for name in dataset.split_names()}


def trained_split_digests(info: dict[str, Any]) -> dict[str, str]:
    """Split name -> digest of each split a run (its run.json) started training."""
    return {
        str(name): str(state["digest"])
        for name, state in (info.get("splits") or {}).items()
        if isinstance(state, dict) and state.get("digest")
    }


def recorded_split_digests(info: dict[str, Any]) -> dict[str, str]:
    """What a run recorded of its cache's splits: every stored split when it started (`stored_splits`; runs
    before it have none), and each split it started training."""
    stored = {str(k): str(v) for k, v in (info.get("stored_splits") or {}).items()}
    return {**stored, **trained_split_digests(info)}


def split_set_change(info: dict[str, Any], dataset: DatasetLike) -> str | None:
    """Why `dataset` no longer splits the way a run recorded (`recorded_split_digests`), for the splits the
    run trains: the first that holds other images, or None. A run resumed or read back on it would join
    results of two split sets."""
    recorded = recorded_split_digests(info)
    for name in info.get("splits") or {}:
        expected = recorded.get(str(name))
        if expected is None:
            continue
        try:
            now = split_digest(dataset, dataset.split(str(name)))
        except DataError:
            return f"split {name} is not in it"
        if now != expected:
            return f"split {name} holds other images (digest {now}, the run recorded {expected})"
    return None


def cache_identity(dataset: DatasetLike) -> dict[str, Any]:
    """What makes a cache at another path the one a run trained on (recorded in run.json, so a run whose
    cache moved can be resumed on it): the same images and scores by name, in the same number, prepared
    with the same size policy, and, where the cache records them, from the same files (`files_digest`:
    a cache made again from edited files under the same names differs). The splits are checked apart, by
    each checkpoint's `split_digest`."""
    identity: dict[str, Any] = {
        "images_digest": images_digest(dataset),
        "count": len(dataset),
        "resize": str(dataset.attrs.get("resize", "")),
    }
    files = image_files_identity(dataset)
    if files:
        identity["files_digest"] = files[IMAGE_FILES_KEY]
    return identity


IMAGE_FILES_KEY = "image_files"  # in checkpoints' metadata and run.json's `data_identity`


def image_files_identity(dataset: DatasetLike) -> dict[str, str]:
    """{IMAGE_FILES_KEY: digest of the cache's image-file digests} where the cache records them, else {}.
    A model records it beside `Recipe.data_identity`, so an evaluation on its own dataset prepared again
    from other files under the same names and scores (KonIQ's other release, edited files) says its
    figures are not those of its training-time tests."""
    import hashlib

    digests = getattr(dataset, "file_digests", None)
    if digests is None:
        return {}
    packed = np.ascontiguousarray(np.asarray(digests, dtype="<u8")).tobytes()
    return {IMAGE_FILES_KEY: hashlib.sha256(packed).hexdigest()[:16]}


def same_cache_identity(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two `cache_identity` records name one cache's content: every key both hold agrees (a record
    written before caches had file digests has no `files_digest`, and is compared without it)."""
    keys = set(a) & set(b)
    return {"images_digest", "count", "resize"} <= keys and all(a[key] == b[key] for key in keys)


NO_SELECTION = "none"  # SplitParts.select_on of whole-dataset splits
LAST_EPOCH = "last"  # `selected_on` in a resume state (last.pt): the newest epoch's model, chosen by nothing


def is_whole_split(name: str) -> bool:
    """`whole_K`: train on every image, no test part (see `iqa_cli.data.authors_splits`)."""
    return str(name).strip().lower().startswith(f"{WHOLE}_") and is_protocol_split(name)


@dataclass(frozen=True)
class SplitParts:
    """Index sets of one split: what trains, what picks the kept model, what is reported."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    select_on: str  # 'val' | 'test' | 'none' (whole-dataset splits: the last epoch is kept)

    @property
    def select(self) -> np.ndarray:
        return self.test if self.select_on == "test" else self.val


def make_parts(dataset: DatasetLike, split: str, *, select_on: str, val_fraction: float, seed: int) -> SplitParts:
    """Training/validation/test indices of `split`. Validation is carved from the training part
    (or is the split's own 'val' part when it has one, e.g. KonIQ's official split); it never
    touches the test part. `select_on='test'` keeps the whole training part and selects on test."""
    parts = dataset.split(split)
    train = np.asarray(parts["train"], dtype=np.int64)
    test = np.asarray(parts["test"], dtype=np.int64)
    if is_whole_split(split):  # every image trains; nothing selects: the last epoch's model is kept
        if train.size == 0:
            raise DataError(f"split '{split}' has no images")
        return SplitParts(split, train, np.empty(0, np.int64), test, NO_SELECTION)
    if train.size == 0 or test.size == 0:
        raise DataError(f"split '{split}' has an empty train or test part ({train.size}/{test.size} images)")
    if select_on == "test":
        return SplitParts(split, train, np.empty(0, np.int64), test, "test")
    if "val" in parts and len(parts["val"]):
        val = np.asarray(parts["val"], dtype=np.int64)
    else:
        from iqa_cli.data.splits import validation_split

        train, val = validation_split(train, val_fraction, seed, ref_ids=validation_groups(dataset))
        train, val = np.asarray(train, dtype=np.int64), np.asarray(val, dtype=np.int64)
    if val.size == 0 or train.size == 0:
        raise ConfigError(
            f"split '{split}': {parts['train'].size} training images are too few to hold out a validation part "
            f"(val_fraction {val_fraction})"
        )
    return SplitParts(split, train, val, test, "val")


def validation_groups(dataset: DatasetLike) -> np.ndarray | None:
    """The groups a validation part keeps on one side of it (its references, where the dataset has them,
    joined with every byte-identical copy of a file), or None where every image is its own group: a
    model is never chosen on content it trained on."""
    from iqa_cli.data.splits import content_groups

    ref_ids = getattr(dataset, "ref_ids", None)
    grouped = ref_ids is not None and bool(np.any(np.asarray(ref_ids) >= 0))
    return content_groups(np.asarray(ref_ids) if grouped else None, getattr(dataset, "file_digests", None))
