"""The distorted-image cache on disk: a regular iqa cache (format version 1) with the distortion labels.

It is an HDF5 file that `iqa_cli.data.cache.open_cache` reads like any prepared dataset:

- ``images`` uint8 (N, H, W, 3), one image per chunk; ``sizes`` int32 (N, 2), all (H, W);
- ``scores`` float32: the distortion level (1 mildest .. 5 strongest; declared as score_type 'level',
  native_range [1, 5], lower_better), a finite stand-in so every cache tool works; it is not a
  subjective quality score. ``std`` is NaN.
- ``names``: '<reference name>_<TT>_<LL>.bmp', the file name VIPNet's MATLAB generator would write
  (its DPM parses type and level from those characters);
- ``ref_ids`` int32: the reference's index in the full reference list (``references``);
- ``labels`` int32: the DPM class (type - 1) * 5 + (level - 1), 0..149; ``dist_type`` and ``level`` int32;
- ``references``: every reference name, in order (the same list in every shard);
- ``reference_digests`` uint64, one per reference: its file's digest (`iqa_cli.data.decode.file_digest`),
  0 for references this file did not distort (another shard's, or past the type-27 walk). A DPM
  records the digests of the references it trained on, so a quality dataset holding one of those
  files is known to be no unseen image for the VIPNet built on it;
- ``distortion_table``: a JSON document (scalar string) with the selected types, their level
  parameters and where each definition comes from;
- ``splits/random_<k>``: reference-disjoint train/test splits drawn from ``ref_ids`` when complete;
- attributes: the cache's usual ones plus ``kind`` = 'distorted', the generation settings (types,
  levels, seed, per_ref, size), ``shard``/``reference_range``, ``references_digest`` and
  ``not_applicable`` (reference/type pairs left out, see type 27).

While it is written the file lives under a hidden name ending in '.partial' (HDF5 in SWMR mode, flushed
after every checkpoint, without ``format_version``, so nothing mistakes it for a cache) next to a
'.progress.json' sidecar that records how many references are complete; it is renamed into place
only when complete.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iqa_cli.atomic import atomic_path, hidden_beside
from iqa_cli.data import cache_format as F
from iqa_cli.errors import DataError
from iqa_cli.h5files import open_h5

KIND = "distorted"
LABELS = "labels"
DIST_TYPE = "dist_type"
LEVEL = "level"
REFERENCES = "references"
REFERENCE_DIGESTS = F.REFERENCE_DIGESTS
TABLE = "distortion_table"
NAME_SUFFIX = ".bmp"

_INT_ARRAYS = (F.REF_IDS, LABELS, DIST_TYPE, LEVEL)


def partial_path(out: Path) -> Path:
    return hidden_beside(out, ".partial")


def progress_path(out: Path) -> Path:
    return hidden_beside(out, ".progress.json")


def image_name(reference: str, type_id: int, level: int) -> str:
    return f"{reference}_{type_id:02d}_{level:02d}{NAME_SUFFIX}"


@dataclass
class Group:
    """The distorted images of one reference, in (type, level) order."""

    ref_id: int
    images: np.ndarray  # (k, H, W, 3) uint8
    types: list[int]
    levels: list[int]
    names: list[str]
    reference_digest: int = 0  # the reference file's digest (0: not known)

    def __len__(self) -> int:
        return len(self.types)


# --- recovering a partial file after a crash ------------------------------------------------------------
#
# A file in SWMR-write mode carries "open for (SWMR) write" flags in its superblock until it is closed;
# after a crash (kill -9, node failure) HDF5 refuses to open it again until the flags are cleared (the
# job of the `h5clear -s` tool). SWMR keeps the rest of the file consistent as of the last flush, so
# clearing the flags is all a resume needs. The superblock (version 2 or 3, at offset 0) is:
# signature (8 bytes), version, size of offsets, size of lengths, consistency flags (1 byte each),
# four addresses, and a Jenkins lookup3 checksum of everything before it.

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MASK = 0xFFFFFFFF


def _rotate(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    for shift_a, shift_b, shift_c in ((4, 6, 8), (16, 19, 4)):
        a = ((a - c) & _MASK) ^ _rotate(c, shift_a)
        c = (c + b) & _MASK
        b = ((b - a) & _MASK) ^ _rotate(a, shift_b)
        a = (a + c) & _MASK
        c = ((c - b) & _MASK) ^ _rotate(b, shift_c)
        b = (b + a) & _MASK
    return a, b, c


def _final(a: int, b: int, c: int) -> int:
    c = ((c ^ b) - _rotate(b, 14)) & _MASK
    a = ((a ^ c) - _rotate(c, 11)) & _MASK
    b = ((b ^ a) - _rotate(a, 25)) & _MASK
    c = ((c ^ b) - _rotate(b, 16)) & _MASK
    a = ((a ^ c) - _rotate(c, 4)) & _MASK
    b = ((b ^ a) - _rotate(a, 14)) & _MASK
    return ((c ^ b) - _rotate(b, 24)) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 `hashlittle` of `data`, the checksum HDF5 puts on its metadata."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK

    def word(offset: int, chunk: bytes) -> int:
        return int.from_bytes(chunk[offset : offset + 4], "little")

    start = 0
    while length - start > 12:
        block = data[start : start + 12]
        a, b, c = _mix((a + word(0, block)) & _MASK, (b + word(4, block)) & _MASK, (c + word(8, block)) & _MASK)
        start += 12
    if length == start:
        return c
    tail = data[start:] + bytes(12 - (length - start))
    return _final((a + word(0, tail)) & _MASK, (b + word(4, tail)) & _MASK, (c + word(8, tail)) & _MASK)


def clear_open_flags(path: Path) -> bool:
    """Clear the superblock's 'open for write' flags left by a crashed writer; True if they were set.

    Only a version 2/3 superblock whose checksum verifies is touched; anything else is left alone.
    """
    with open(path, "r+b") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:8] != _SIGNATURE or head[8] not in (2, 3):
            return False
        size = 12 + 4 * head[9] + 4
        handle.seek(0)
        block = handle.read(size)
        if len(block) < size or int.from_bytes(block[-4:], "little") != lookup3(block[:-4]) or block[11] == 0:
            return False
        fixed = block[:11] + b"\x00" + block[12:-4]
        handle.seek(0)
        handle.write(fixed + lookup3(fixed).to_bytes(4, "little"))
        handle.flush()
        os.fsync(handle.fileno())
    return True


class PartialFile:
    """The cache being written: resizable per-image datasets that grow one reference at a time."""

    def __init__(self, path: Path, handle: Any) -> None:
        self.path = path
        self.file = handle

    @classmethod
    def create(cls, path: Path, height: int, width: int, references: list[str], table: str) -> PartialFile:
        import h5py

        handle = open_h5(path, "w", libver="latest")
        string = h5py.string_dtype("utf-8")
        handle.create_dataset(
            F.IMAGES, shape=(0, height, width, 3), maxshape=(None, height, width, 3), chunks=(1, height, width, 3),
            dtype=np.uint8,
        )  # fmt: skip
        handle.create_dataset(F.SIZES, shape=(0, 2), maxshape=(None, 2), chunks=(4096, 2), dtype=np.int32)
        for key in (F.SCORES, F.STD):
            handle.create_dataset(key, shape=(0,), maxshape=(None,), chunks=(16384,), dtype=np.float32)
        for key in _INT_ARRAYS:
            handle.create_dataset(key, shape=(0,), maxshape=(None,), chunks=(16384,), dtype=np.int32)
        handle.create_dataset(F.NAMES, shape=(0,), maxshape=(None,), chunks=(4096,), dtype=string)
        handle.create_dataset(REFERENCES, data=np.asarray(references, dtype=object), dtype=string)
        handle.create_dataset(REFERENCE_DIGESTS, data=np.zeros(len(references), dtype=np.uint64))
        handle.create_dataset(TABLE, data=table, dtype=string)
        # SWMR keeps the file consistent on disk after every flush, so a killed run can be resumed.
        handle.swmr_mode = True
        return cls(path, handle)

    @classmethod
    def open(cls, path: Path, height: int, width: int, count: int) -> PartialFile:
        """Reopen a partial file to resume; keep its first `count` images (the last checkpoint)."""
        clear_open_flags(path)  # a crashed run leaves them set; ours is the only writer (see the lock)
        try:
            handle = open_h5(path, "r+", libver="latest")
        except OSError as exc:
            message = f"the partial file cannot be reopened ({exc}); start again without --resume"
            raise DataError(message, path=path) from None
        partial = cls(path, handle)
        images = handle.get(F.IMAGES)
        if images is None or tuple(images.shape[1:]) != (height, width, 3) or images.shape[0] < count:
            handle.close()
            raise DataError(
                f"the partial file does not hold the {count} images its progress file records; "
                "start again without --resume",
                path=path,
            )
        handle.swmr_mode = True
        partial.truncate(count)
        return partial

    @property
    def count(self) -> int:
        return int(self.file[F.IMAGES].shape[0])

    def _per_image(self) -> list[Any]:
        keys = (F.SIZES, F.SCORES, F.STD, F.NAMES, *_INT_ARRAYS)
        return [self.file[F.IMAGES], *(self.file[k] for k in keys)]

    def truncate(self, count: int) -> None:
        for dataset in self._per_image():
            dataset.resize((count, *dataset.shape[1:]))

    def append(self, group: Group) -> None:
        start = self.count
        stop = start + len(group)
        if not len(group):
            return
        # A partial file begun before iqa kept reference digests has none to fill (SWMR cannot add one).
        if group.reference_digest and REFERENCE_DIGESTS in self.file:
            self.file[REFERENCE_DIGESTS][group.ref_id] = np.uint64(group.reference_digest)
        height, width = group.images.shape[1:3]
        types = np.asarray(group.types, dtype=np.int32)
        levels = np.asarray(group.levels, dtype=np.int32)
        values = {
            F.IMAGES: group.images,
            F.SIZES: np.tile(np.asarray([[height, width]], dtype=np.int32), (len(group), 1)),
            F.SCORES: levels.astype(np.float32),
            F.STD: np.full(len(group), np.nan, dtype=np.float32),
            F.NAMES: np.asarray(group.names, dtype=object),
            F.REF_IDS: np.full(len(group), group.ref_id, dtype=np.int32),
            LABELS: (types - 1) * 5 + (levels - 1),
            DIST_TYPE: types,
            LEVEL: levels,
        }
        for key, value in values.items():
            dataset = self.file[key]
            dataset.resize((stop, *dataset.shape[1:]))
            dataset[start:stop] = value
            # Written out now: HDF5 keeps chunks in its cache and writes them when the dataset object is
            # freed, where a refused write (a full disk) is only printed, and generation went on regardless.
            dataset.flush()

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.file.close()


def write_progress(out: Path, state: dict[str, Any]) -> None:
    """Replace the progress sidecar atomically (written after the partial file is flushed)."""
    with atomic_path(progress_path(out), while_stopping=True) as tmp:  # what a stop records, to resume from
        tmp.write_text(json.dumps(state, indent=1), encoding="utf-8")


def read_progress(out: Path) -> dict[str, Any] | None:
    path = progress_path(out)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"unreadable progress file ({exc}); start again without --resume", path=path) from None


def _h5_attr(value: Any) -> Any:
    import h5py

    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, str) for v in value):
            return np.asarray(list(value), dtype=h5py.string_dtype("utf-8"))
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
            return np.asarray(value, dtype=np.int64)
        return np.asarray(value, dtype=np.float64)
    return value


def finalize(
    path: Path, attrs: dict[str, Any], splits: dict[str, dict[str, np.ndarray]], split_attrs: dict[str, Any]
) -> None:
    """Write the splits and attributes (format_version last) into a complete file, outside SWMR mode."""
    with open_h5(path, "r+", libver="latest") as handle:
        if F.SPLITS in handle:
            del handle[F.SPLITS]
        group = handle.create_group(F.SPLITS)
        for key, value in split_attrs.items():
            group.attrs[key] = value
        for seed_offset, (name, parts) in enumerate(splits.items()):
            sub = group.create_group(name)
            sub.attrs["seed"] = int(split_attrs.get("seed", 0)) + seed_offset
            for part, indices in parts.items():
                sub.create_dataset(part, data=np.asarray(indices, dtype=np.int64))
        for key, value in attrs.items():
            if key != "format_version":
                handle.attrs[key] = _h5_attr(value)
        handle.attrs["format_version"] = attrs["format_version"]


def read_int_array(handle: Any, key: str) -> np.ndarray:
    return np.asarray(handle[key][()], dtype=np.int64)


def read_labels(path: str | Path) -> dict[str, np.ndarray]:
    """The per-image distortion labels of a distorted cache: 'labels' (DPM class 0..149), 'dist_type',
    'level' (int64 arrays, in image order), or a one-line DataError for any other file."""
    from iqa_cli.data.cache import open_cache

    with open_cache(path) as cache:  # validates the file as a cache first
        if cache.attrs.get("kind") != KIND or cache.format != "h5":
            raise DataError("is not a distorted-image cache (written by `iqa prepare distorted`)", path=path)
    with open_h5(path, "r") as handle:
        return {key: read_int_array(handle, key) for key in (LABELS, DIST_TYPE, LEVEL)}
