"""Reading a cache: `open_cache(path) -> Cache` for HDF5 and NPZ alike. See `iqa_cli.data.cache`."""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from iqa_cli.data import cache_format as F
from iqa_cli.data.authors_splits import PROTOCOL_SPLITS, ImageList, is_protocol_split, protocol_split
from iqa_cli.data.records import TRAINING_IMAGE
from iqa_cli.data.splits import copy_groups
from iqa_cli.errors import DataError
from iqa_cli.h5files import open_h5
from iqa_cli.home import not_a_cache_file

_RANDOM = re.compile(r"^(?:random_)?(\d+)$")


def plain_value(value: Any) -> Any:
    """HDF5/NumPy attribute values as plain Python (str, int, float, bool, list)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [plain_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    return value


def _file_identity(path: Path) -> tuple[int, int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (-1, -1, -1)
    return (stat.st_dev, stat.st_ino, stat.st_size)


def gather_rows(array: Any, indices: np.ndarray) -> np.ndarray:
    """array[indices] for an HDF5 dataset or (memory-mapped) array, reading runs of consecutive
    indices as one slice each, and returning rows in the order of `indices`."""
    count = len(array)
    indices = np.asarray(indices, dtype=np.int64).ravel()
    if indices.size and (indices.min() < 0 or indices.max() >= count):
        bad = indices[(indices < 0) | (indices >= count)][0]
        raise IndexError(f"image index {bad} out of range for a cache of {count} images")
    out = np.empty((indices.size, *array.shape[1:]), dtype=array.dtype)
    if indices.size == 0:
        return out
    order = np.argsort(indices, kind="stable")
    ordered = indices[order]
    in_order = bool((order == np.arange(indices.size)).all())
    breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
    for start, stop in zip(np.r_[0, breaks], np.r_[breaks, indices.size], strict=True):
        block = slice(int(ordered[start]), int(ordered[stop - 1]) + 1)
        if in_order:
            out[start:stop] = array[block]
        else:
            out[order[start:stop]] = array[block]
    return out


_PART_ORDER = {"train": 0, "val": 1, "test": 2}


def _ordered_parts(parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(sorted(parts.items(), key=lambda item: (_PART_ORDER.get(item[0], 3), item[0])))


class Cache:
    """An open cache. Per-image metadata is in memory; images are read on demand.

    Attributes: `path`, `format` ('h5'|'npz'), `images` (array-like N x Hmax x Wmax x 3 uint8: an
    h5py dataset or a read-only memory map), `sizes` (N x 2 int32, valid (h, w)), `scores`, `std`
    (float32), `names` (list[str]), `ref_ids` (int32), `attrs` (dict of plain Python values), and
    `distributions` (N x K float32 rating distributions, NaN rows unknown) or None when the cache has none.

    A Cache pickles as its path and reopens on unpickling, so it can be handed to spawned DataLoader
    workers; a forked worker should call `reopen()` first (HDF5 handles must not cross a fork).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._handle: Any = None
        self._splits: dict[str, dict[str, np.ndarray]] = {}
        self.split_attrs: dict[str, Any] = {}
        self.distributions: np.ndarray | None = None
        self.flags = np.zeros(0, dtype=np.uint8)  # per image; all 0 when the cache has no `flags` array
        self.file_digests: np.ndarray | None = None  # per image (uint64); None: written before caches had them
        # Per reference (uint64, by `ref_ids`; 0 unknown): the file each image was made from (a distorted-image
        # cache, or a full-reference dataset that ships its references).
        self.reference_digests: np.ndarray | None = None
        self.mos_zscore: np.ndarray | None = None  # KonIQ's MOS_zscore per image (float32); None: not given
        self.format = _sniff(self.path)
        self._identity = _file_identity(self.path)
        try:
            if self.format == "h5":
                self._open_h5()
            else:
                self._open_npz()
            self._validate()
        except DataError:
            self.close()
            raise
        except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            self.close()
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise DataError(f"not a readable iqa cache ({type(exc).__name__}: {text})", path=self.path) from None

    # --- opening ---

    def _open_h5(self) -> None:
        try:
            handle = open_h5(self.path, "r")
        except OSError as exc:
            raise DataError(f"cannot open as HDF5 (truncated or damaged file: {exc})", path=self.path) from None
        self._handle = handle
        if "format_version" not in handle.attrs or F.IMAGES not in handle:
            raise DataError("is an HDF5 file but not an iqa cache (no format_version / images)", path=self.path)
        self.attrs = {k: plain_value(v) for k, v in handle.attrs.items()}
        self._check_version()
        missing = [k for k in F.PER_IMAGE if k not in handle]
        if missing:
            raise DataError(f"iqa cache lacks the array '{missing[0]}'", path=self.path)
        self.images = handle[F.IMAGES]
        self.sizes = np.asarray(handle[F.SIZES][()], dtype=np.int32)
        self.scores = np.asarray(handle[F.SCORES][()], dtype=np.float32)
        self.std = np.asarray(handle[F.STD][()], dtype=np.float32)
        self.ref_ids = np.asarray(handle[F.REF_IDS][()], dtype=np.int32)
        self.names = [plain_value(n) for n in handle[F.NAMES][()].tolist()]
        if F.DISTRIBUTIONS in handle:
            self.distributions = np.asarray(handle[F.DISTRIBUTIONS][()], dtype=np.float32)
        if F.FLAGS in handle:
            self.flags = np.asarray(handle[F.FLAGS][()], dtype=np.uint8)
        if F.FILE_DIGESTS in handle:
            self.file_digests = np.asarray(handle[F.FILE_DIGESTS][()], dtype=np.uint64)
        if F.MOS_ZSCORE in handle:
            self.mos_zscore = np.asarray(handle[F.MOS_ZSCORE][()], dtype=np.float32)
        if F.REFERENCE_DIGESTS in handle:
            self.reference_digests = np.asarray(handle[F.REFERENCE_DIGESTS][()], dtype=np.uint64)
        if F.SPLITS in handle:
            group = handle[F.SPLITS]
            self.split_attrs = {k: plain_value(v) for k, v in group.attrs.items()}
            for name in group:
                self._splits[name] = {part: np.asarray(group[name][part][()], np.int64) for part in group[name]}
        self._splits = {name: _ordered_parts(parts) for name, parts in self._splits.items()}

    def _open_npz(self) -> None:
        from iqa_cli.data.npz_stream import member_memmap

        try:
            archive = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile as exc:
            raise DataError(f"cannot open as NPZ (truncated or damaged file: {exc})", path=self.path) from None
        self._handle = archive
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        if F.ATTRS not in members or F.IMAGES not in members:
            raise DataError("is an NPZ file but not an iqa cache (no attrs / images member)", path=self.path)
        missing = [k for k in F.PER_IMAGE if k not in members]
        if missing:
            raise DataError(f"iqa cache lacks the array '{missing[0]}'", path=self.path)

        def load(key: str) -> np.ndarray:
            with archive.open(members[key]) as handle:
                return np.lib.format.read_array(handle, allow_pickle=False)

        document = json.loads(str(load(F.ATTRS)[()]))
        split_info = document.pop(F.SPLITS, {})
        self.attrs = document
        self._check_version()
        self.split_attrs = dict(split_info.get("attrs", {}))
        images = member_memmap(self.path, members[F.IMAGES])
        self.images = images if images is not None else load(F.IMAGES)  # compressed: loaded (other tools only)
        self.sizes = load(F.SIZES).astype(np.int32)
        self.scores = load(F.SCORES).astype(np.float32)
        self.std = load(F.STD).astype(np.float32)
        self.ref_ids = load(F.REF_IDS).astype(np.int32)
        self.names = [str(n) for n in load(F.NAMES).tolist()]
        if F.DISTRIBUTIONS in members:
            self.distributions = load(F.DISTRIBUTIONS).astype(np.float32)
        if F.FLAGS in members:
            self.flags = load(F.FLAGS).astype(np.uint8)
        if F.FILE_DIGESTS in members:
            self.file_digests = load(F.FILE_DIGESTS).astype(np.uint64)
        if F.MOS_ZSCORE in members:
            self.mos_zscore = load(F.MOS_ZSCORE).astype(np.float32)
        if F.REFERENCE_DIGESTS in members:
            self.reference_digests = load(F.REFERENCE_DIGESTS).astype(np.uint64)
        prefix = f"{F.SPLITS}/"
        for key in members:
            if key.startswith(prefix) and key.count("/") == 2:
                _, name, part = key.split("/")
                self._splits.setdefault(name, {})[part] = load(key).astype(np.int64)
        self._splits = {name: _ordered_parts(parts) for name, parts in self._splits.items()}

    def _check_version(self) -> None:
        version = self.attrs.get("format_version")
        if not isinstance(version, int):
            raise DataError("iqa cache has no valid format_version", path=self.path)
        if version > F.FORMAT_VERSION:
            raise DataError(
                f"cache format_version {version} is newer than this iqa reads ({F.FORMAT_VERSION}); upgrade iqa",
                path=self.path,
            )

    def _validate(self) -> None:
        n = len(self.images)
        if self.flags.size == 0:
            self.flags = np.zeros(len(self.scores), dtype=np.uint8)
        elif self.flags.shape != (n,):
            raise DataError(
                f"'{F.FLAGS}' has {self.flags.size} entries but there are {n} images (damaged cache)", path=self.path
            )
        for key in (F.FILE_DIGESTS, F.MOS_ZSCORE):
            values = getattr(self, key)
            if values is not None and values.shape != (n,):
                raise DataError(
                    f"'{key}' has {values.size} entries but there are {n} images (damaged cache)", path=self.path
                )
        shape = tuple(self.images.shape)
        if len(shape) != 4 or shape[3] != 3 or np.dtype(self.images.dtype) != np.uint8:
            raise DataError(
                f"images array has shape {shape} {self.images.dtype}, expected uint8 N x H x W x 3", path=self.path
            )
        for key in F.PER_IMAGE:
            length = len(getattr(self, key))
            if length != n:
                raise DataError(
                    f"'{key}' has {length} entries but there are {n} images (damaged cache)", path=self.path
                )
        if self.distributions is not None and (self.distributions.ndim != 2 or len(self.distributions) != n):
            raise DataError(
                f"'{F.DISTRIBUTIONS}' has shape {self.distributions.shape}, expected ({n}, categories) (damaged cache)",
                path=self.path,
            )
        if n and ((self.sizes < 1).any() or (self.sizes[:, 0] > shape[1]).any() or (self.sizes[:, 1] > shape[2]).any()):
            raise DataError("'sizes' holds sizes outside the images array (damaged cache)", path=self.path)
        for name, parts in self._splits.items():
            for part, indices in parts.items():
                if indices.size and (indices.min() < 0 or indices.max() >= n):
                    raise DataError(
                        f"split {name}/{part} indexes outside the {n} images (damaged cache)", path=self.path
                    )
            self._check_disjoint(name, parts)
        if self.format == "h5" and n:
            written = self.images.id.get_num_chunks() if self.images.chunks is not None else n
            if written < n:  # one chunk per image: an unwritten chunk would read as a black image
                raise DataError(
                    f"only {written} of {n} images are stored (damaged or unfinished cache)", path=self.path
                )

    def _check_disjoint(self, name: str, parts: dict[str, np.ndarray]) -> None:
        """Parts of a stored split never share an image (nor a reference, for reference-disjoint splits)."""
        keys = list(parts)
        disjoint_refs = name.startswith("random_") and bool(self.split_attrs.get("reference_disjoint"))
        for i, first in enumerate(keys):
            for second in keys[i + 1 :]:
                shared = np.intersect1d(parts[first], parts[second])
                if shared.size:
                    raise DataError(
                        f"split {name}: {first} and {second} share {shared.size} image(s) (first: "
                        f"{self.names[int(shared[0])]}); a model would be scored on images it trained on "
                        "(damaged or edited cache)",
                        path=self.path,
                    )
                if disjoint_refs:
                    refs = np.intersect1d(self.ref_ids[parts[first]], self.ref_ids[parts[second]])
                    refs = refs[refs >= 0]
                    if refs.size:
                        raise DataError(
                            f"split {name}: {first} and {second} share reference {int(refs[0])} in a "
                            "reference-disjoint split (damaged or edited cache)",
                            path=self.path,
                        )

    # --- reading ---

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def shape(self) -> tuple[int, ...]:
        """(N, Hmax, Wmax, 3) of the images array."""
        return tuple(int(s) for s in self.images.shape)

    @property
    def padded(self) -> bool:
        """True when some images are smaller than the array (see `sizes`)."""
        return bool(len(self) and ((self.sizes[:, 0] != self.shape[1]) | (self.sizes[:, 1] != self.shape[2])).any())

    def read_images(self, indices: np.ndarray | list[int]) -> np.ndarray:
        """uint8 (len(indices), Hmax, Wmax, 3) in the order of `indices`; increasing indices read fastest
        (runs of consecutive indices are read with one slice each)."""
        self._check_unchanged()
        try:
            return gather_rows(self.images, np.asarray(indices))
        except OSError as exc:  # h5py: a chunk that cannot be read (truncated or damaged file)
            raise DataError(f"cannot read images (damaged or truncated cache: {exc})", path=self.path) from None

    def image(self, index: int) -> np.ndarray:
        """One image cropped to its valid (h, w) region."""
        height, width = (int(v) for v in self.sizes[index])
        return self.read_images([int(index)])[0, :height, :width]

    def _check_unchanged(self) -> None:
        """The file must stay the one opened: a cache truncated or rewritten while a run streams from it
        would read as zeros (HDF5 fill values) or crash a memory map."""
        now = _file_identity(self.path)
        if now != self._identity:
            was, is_ = self._identity[2], now[2]
            raise DataError(
                f"the cache file changed while it was being read (size {was} -> {is_} bytes, or replaced): "
                "was it prepared again or truncated? Start again once it is complete",
                path=self.path,
            )

    def split_names(self) -> list[str]:
        """The stored splits: random_0, random_1, ... in numeric order, then official if present."""

        def key(name: str) -> tuple[int, int, str]:
            match = _RANDOM.match(name)
            return (0, int(match.group(1)), name) if match else (1, 0, name)

        return sorted(self._splits, key=key)

    def split(self, name: str | int) -> dict[str, np.ndarray]:
        """Parts ('train', 'test', and 'val' for official) of a split: 'random_3', '3' or 'official'."""
        text = str(name).strip()
        match = _RANDOM.match(text)
        key = f"random_{int(match.group(1))}" if match else text.lower()
        if key not in self._splits and is_protocol_split(key):
            return self._protocol_split(key)
        if key not in self._splits:
            available = ", ".join([*self.split_names(), *PROTOCOL_SPLITS]) or "none"
            raise DataError(f"cache has no split '{name}' (available: {available})", path=self.path)
        return {part: indices.copy() for part, indices in self._splits[key].items()}

    def image_list(self) -> ImageList:
        """The image list the authors' split protocols are computed from."""
        return ImageList(
            dataset=str(self.attrs.get("dataset") or ""),
            names=self.names,
            flags=self.flags,
            ref_ids=self.ref_ids,
            skipped=int(self.attrs.get("skipped") or 0),
        )

    def _protocol_split(self, name: str) -> dict[str, np.ndarray]:
        """The authors' split `name` (see `iqa_cli.data.authors_splits`): their prep seed 0 and 80/20,
        whatever seed and share the stored random splits use."""
        try:
            return protocol_split(name, self.image_list())
        except DataError as exc:
            raise DataError(f"split '{name}': {exc}", path=self.path) from None

    def extra_array(self, key: str) -> np.ndarray | None:
        """An array a cache of some kind carries besides the standard ones (e.g. a distorted set's
        `labels`), or None when this cache has none by that name."""
        if self.format == "h5":
            return np.asarray(self._handle[key][()]) if key in self._handle else None
        names = {info.filename.removesuffix(".npy"): info for info in self._handle.infolist()}
        if key not in names:
            return None
        with self._handle.open(names[key]) as handle:
            return np.lib.format.read_array(handle, allow_pickle=False)

    # --- lifetime ---

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()
        if isinstance(getattr(self, "images", None), np.memmap):
            # Dropping our reference unmaps the file once no caller holds a view of it.
            self.images = np.empty((0, 1, 1, 3), np.uint8)

    def reopen(self) -> None:
        """Close and open the file again: call it first thing in a forked worker process (HDF5 handles
        inherited through fork must not be used)."""
        self.close()
        self.__init__(self.path)  # type: ignore[misc]

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(Path(state["path"]))  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Cache({str(self.path)!r}, format={self.format}, images={self.shape})"


def _sniff(path: Path) -> str:
    if not path.is_file():
        raise DataError(not_a_cache_file(path), path=path)
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        raise DataError("cache file is empty (an interrupted write? run `iqa prepare` again)", path=path)
    if head.startswith(F.HDF5_MAGIC):
        return "h5"
    if head.startswith(F.ZIP_MAGIC):
        return "npz"
    import h5py

    if h5py.is_hdf5(str(path)):  # HDF5 with a user block
        return "h5"
    raise DataError("not an iqa cache (neither HDF5 nor NPZ)", path=path)


def open_cache(path: str | Path) -> Cache:
    """Open a cache written by `build_cache` / `iqa prepare`; a one-line DataError for anything else."""
    return Cache(Path(path))


def load_all_images(cache: Cache | str | Path) -> np.ndarray:
    """Every image as one in-memory uint8 (N, Hmax, Wmax, 3) array. For small caches only."""
    if not isinstance(cache, Cache):
        with open_cache(cache) as opened:
            return load_all_images(opened)
    data = cache.images[:]
    return np.array(data) if isinstance(data, np.memmap) else np.asarray(data)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _value_range(values: np.ndarray | None) -> dict[str, float] | None:
    """{min, max} of the finite values; None when there are none."""
    finite = np.asarray(values if values is not None else [], dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return {"min": float(finite.min()), "max": float(finite.max())} if finite.size else None


def reference_files_known(ref_ids: np.ndarray, reference_digests: np.ndarray | None) -> tuple[int, int] | None:
    """(references whose file's digest is kept, references the images use) by `ref_ids`; None when the
    cache keeps no reference digests (prepared before iqa recorded them)."""
    if reference_digests is None:
        return None
    used = np.unique(np.asarray(ref_ids, dtype=np.int64))
    used = used[used >= 0]
    digests = np.asarray(reference_digests, dtype=np.uint64)
    inside = used[used < digests.size]
    return int((digests[inside] != 0).sum()), int(used.size)


def describe_cache(cache: Cache) -> dict[str, Any]:
    """Everything `iqa prepare inspect` shows, as plain JSON-ready values (NaN becomes None)."""
    n = len(cache)
    scores = cache.scores.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # an infinite score: its mean and std are None below
        score_std = scores.std() if n else math.nan
    std_known = int(np.isfinite(cache.std).sum())
    refs = cache.ref_ids[cache.ref_ids >= 0]
    reference_files = reference_files_known(cache.ref_ids, cache.reference_digests)
    heights, widths = cache.sizes[:, 0], cache.sizes[:, 1]
    return {
        "path": str(cache.path),
        "format": cache.format,
        "bytes": cache.path.stat().st_size,
        "dataset": cache.attrs.get("dataset"),
        "count": n,
        "images": {
            "shape": list(cache.shape),
            "dtype": str(np.dtype(cache.images.dtype)),
            "padded": cache.padded,
            "height": [int(heights.min()), int(heights.max())] if n else None,
            "width": [int(widths.min()), int(widths.max())] if n else None,
        },
        "scores": {
            "type": cache.attrs.get("score_type"),
            "native_range": cache.attrs.get("native_range"),
            "lower_better": cache.attrs.get("lower_better"),
            "min": _finite(scores.min()) if n else None,
            "max": _finite(scores.max()) if n else None,
            "mean": _finite(scores.mean()) if n else None,
            "std_of_scores": _finite(score_std),
            # Images whose score is NaN or infinite (a cache written before the scores were range-checked):
            # training refuses such a cache, and min, max and mean are then None.
            "not_finite": int((~np.isfinite(scores)).sum()),
        },
        "std_available": std_known,
        "distributions": None if cache.distributions is None else int(cache.distributions.shape[1]),
        # KonIQ's z-score MOS beside its 1-5 MOS (VIPNet's label); None: the cache keeps none
        "mos_zscore": _value_range(cache.mos_zscore),
        "references": int(len(np.unique(refs))),
        # How many of those have their file's digest (a DPM made from them is then told); None: none kept
        "reference_files": None if reference_files is None else reference_files[0],
        "training_images": int((cache.flags & TRAINING_IMAGE).astype(bool).sum()),
        "training_image_names": [cache.names[i] for i in np.flatnonzero(cache.flags & TRAINING_IMAGE)],
        "resize": cache.attrs.get("resize"),
        "splits": {
            name: {part: int(len(ix)) for part, ix in cache.split(name).items()} for name in cache.split_names()
        },
        "split_attrs": cache.split_attrs,
        "skipped": cache.attrs.get("skipped", 0),
        "skipped_names": cache.attrs.get("skipped_names", []),
        # None: the cache predates file digests, so copies are unknown
        "identical_files": None if cache.file_digests is None else copy_groups(cache.file_digests, cache.names),
        "attrs": {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in cache.attrs.items()},
    }


def split_members(cache: Cache, name: str) -> dict[str, list[str]]:
    """The image names (as stored) of each part of split `name`, stored or computed, in cache order."""
    parts = cache.split(name)
    return {part: [cache.names[i] for i in np.asarray(indices, dtype=np.int64)] for part, indices in parts.items()}
