"""Building a cache: parse -> read headers -> allocate -> stream decoded images in -> metadata -> rename.

The public entry point is `build_cache`; see `iqa_cli.data.cache` for the format. Memory stays
bounded: the image array is created with its final shape and each decoded image is written as it
arrives from the worker processes (HDF5: one chunk per image; NPZ: the .npy member is streamed).

Bad images with `skip_bad`: a file that fails in the header pass is dropped before allocation. One
that fails only when decoded (a truncated JPEG) is found after allocation: HDF5 keeps writing the
good images compactly and shrinks the dataset at the end; NPZ cannot shrink a streamed member, so it
finishes the pass to find every bad file and then writes the images once more without them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from iqa_cli.atomic import atomic_path
from iqa_cli.data import cache_format as F
from iqa_cli.data.decode import (
    DecodeFailure,
    DecodeJob,
    ImageHeader,
    content_notes,
    decode_images_with_digests,
    default_workers,
    file_digest,
    read_headers,
    worker_pool,
)
from iqa_cli.data.records import TRAINING_IMAGE, DatasetSpec, Record
from iqa_cli.data.resize import RESAMPLE_NOTE, ResizePolicy, as_policy
from iqa_cli.data.splits import RANDOM_PREFIX, content_groups, copy_groups, official_split, random_splits
from iqa_cli.errors import ConfigError, DataError
from iqa_cli.h5files import open_h5
from iqa_cli.locks import hold
from iqa_cli.progress import NullProgress, Progress
from iqa_cli.stop import raise_if_stopped
from iqa_cli.version import __version__

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheSummary:
    """What `build_cache` wrote."""

    path: Path
    format: str
    dataset: str
    count: int  # images stored
    shape: tuple[int, ...]  # of the images array: (N, Hmax, Wmax, 3)
    padded: bool  # True when images differ in size (see `sizes`)
    resize: str  # the resize policy, e.g. '244x244', 'short:512', 'none'
    skipped: list[tuple[str, str]]  # (name, reason) of each image left out with skip_bad
    splits: dict[str, dict[str, int]]  # split name -> part -> number of images
    bytes: int  # size of the file on disk
    seconds: float  # wall time of the whole build
    # The names of each set of byte-identical image files (kept on one side of every random split).
    identical_files: list[list[str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "dataset": self.dataset,
            "count": self.count,
            "shape": list(self.shape),
            "padded": self.padded,
            "resize": self.resize,
            "skipped": [{"name": n, "reason": r} for n, r in self.skipped],
            "splits": self.splits,
            "identical_files": self.identical_files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
        }


@dataclass
class _Item:
    record: Record
    header: ImageHeader
    size: tuple[int, int]  # stored (w, h)


@dataclass
class _Plan:
    """What goes into the file: the kept images and everything that was dropped on the way."""

    items: list[_Item]
    skipped: list[tuple[str, str]] = field(default_factory=list)


# --- sinks: the two file formats -----------------------------------------------------------------


class _H5Sink:
    compacts = True  # good images are written compactly after a skipped one; the dataset shrinks at the end

    def __init__(self, path: Path) -> None:
        import h5py

        self._h5py = h5py
        self.file = open_h5(path, "w", track_order=True)  # attributes list in the order written
        self.images: Any = None
        self._pad: np.ndarray | None = None

    def begin(self, n: int, height: int, width: int) -> None:
        # One image per chunk: any image is one contiguous read. No compression: decoded photographs
        # shrink little under gzip/lzf, and every epoch would pay the decompression on the data path.
        self.images = self.file.create_dataset(
            F.IMAGES,
            shape=(n, height, width, 3),
            maxshape=(None, height, width, 3),
            chunks=(1, height, width, 3),
            dtype=np.uint8,
            fillvalue=0,
        )
        self._pad = np.zeros((1, height, width, 3), dtype=np.uint8)

    def put(self, slot: int, image: np.ndarray) -> None:
        assert self._pad is not None
        height, width = image.shape[:2]
        if (height, width) != self._pad.shape[1:3]:
            self._pad[...] = 0
        self._pad[0, :height, :width] = image
        self.images.id.write_direct_chunk((slot, 0, 0, 0), self._pad)

    def shrink(self, n: int, height: int, width: int) -> bool:
        self.images.resize((n, height, width, 3))
        return True

    def finish(self, arrays: dict[str, np.ndarray], names: list[str], attrs: dict[str, Any], splits: _Splits) -> None:
        h5py = self._h5py
        for key, value in arrays.items():
            self.file.create_dataset(key, data=value)
        self.file.create_dataset(F.NAMES, data=np.asarray(names, dtype=object), dtype=h5py.string_dtype("utf-8"))
        group = self.file.create_group(F.SPLITS)
        for key, value in splits.attrs.items():
            group.attrs[key] = value
        for name, parts in splits.parts.items():
            sub = group.create_group(name)
            for key, value in splits.split_attrs.get(name, {}).items():
                sub.attrs[key] = value
            for part, indices in parts.items():
                sub.create_dataset(part, data=indices.astype(np.int64))
        for key, value in attrs.items():
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                self.file.attrs[key] = np.asarray(list(value), dtype=h5py.string_dtype("utf-8"))
            elif isinstance(value, (list, tuple)):
                self.file.attrs[key] = np.asarray(value, dtype=np.float64)
            else:
                self.file.attrs[key] = value

    def close(self) -> None:
        self.file.close()


class _NpzSink:
    compacts = False  # a streamed member cannot have holes nor shrink (see build_cache)

    def __init__(self, path: Path) -> None:
        from iqa_cli.data.npz_stream import NpzStreamWriter

        self.writer = NpzStreamWriter(path)
        self._stream: Any = None
        self._pad: np.ndarray | None = None
        self._shape: tuple[int, ...] = ()
        self._written = 0

    def begin(self, n: int, height: int, width: int) -> None:
        self._shape = (n, height, width, 3)
        self._stream = self.writer.begin_array(F.IMAGES, self._shape, np.dtype(np.uint8))
        self._pad = np.zeros((height, width, 3), dtype=np.uint8)

    def put(self, slot: int, image: np.ndarray) -> None:
        assert self._pad is not None and slot == self._written
        height, width = image.shape[:2]
        if (height, width) == self._pad.shape[:2]:
            self._stream.write(image)
        else:
            self._pad[...] = 0
            self._pad[:height, :width] = image
            self._stream.write(self._pad)
        self._written += 1

    def shrink(self, n: int, height: int, width: int) -> bool:
        return (n, height, width, 3) == self._shape and self._written == n

    def finish(self, arrays: dict[str, np.ndarray], names: list[str], attrs: dict[str, Any], splits: _Splits) -> None:
        self._stream.close()
        for key, value in arrays.items():
            self.writer.write_array(key, value)
        self.writer.write_array(F.NAMES, np.asarray(names, dtype=str))
        for name, parts in splits.parts.items():
            for part, indices in parts.items():
                self.writer.write_array(f"{F.SPLITS}/{name}/{part}", indices.astype(np.int64))
        document = dict(attrs)
        document[F.SPLITS] = {"attrs": splits.attrs, "splits": splits.split_attrs}
        self.writer.write_array(F.ATTRS, np.asarray(json.dumps(document)))

    def close(self) -> None:
        self.writer.close()


def _open_sink(path: Path, fmt: str) -> _H5Sink | _NpzSink:
    return _H5Sink(path) if fmt == "h5" else _NpzSink(path)


# --- splits ---------------------------------------------------------------------------------------------


@dataclass
class _Splits:
    parts: dict[str, dict[str, np.ndarray]]
    attrs: dict[str, Any]  # on the `splits` group: seed, count, test fraction, reference_disjoint
    split_attrs: dict[str, dict[str, Any]]  # per split, e.g. its own seed
    # Each record's group (its reference, joined with its files' copies; -1: in no random split), or None
    # where every image is its own group.
    groups: np.ndarray | None = None


def _make_splits(
    records: Sequence[Record],
    reference_disjoint: bool,
    count: int,
    seed: int,
    test_fraction: float,
    file_digests: np.ndarray | None = None,
) -> _Splits:
    ref_ids = np.asarray([r.ref_id for r in records], dtype=np.int64)
    disjoint = reference_disjoint and bool((ref_ids >= 0).any())
    # Images flagged TRAINING_IMAGE (LIVE Challenge's 7) stay in the cache but belong to no random split:
    # the split is drawn over the others, so it equals the split of a cache without them.
    eligible = np.flatnonzero([not (r.flags & TRAINING_IMAGE) for r in records]).astype(np.int64)
    # Byte-identical files (a copy, a link) land on one side, as the images of one reference do: a test
    # image whose very file was trained on is no test result.
    refs = ref_ids[eligible] if disjoint else None
    groups = content_groups(refs, file_digests[eligible] if file_digests is not None else None)
    unit = None
    if groups is not refs:  # `content_groups` returns `refs` itself when no file repeats
        unit = "reference image (with its files' copies)" if disjoint else "distinct image file"
    parts = random_splits(len(eligible), count=count, seed=seed, test_fraction=test_fraction, ref_ids=groups, unit=unit)
    parts = {name: {part: eligible[ix] for part, ix in split.items()} for name, split in parts.items()}
    split_attrs: dict[str, dict[str, Any]] = {name: {"seed": seed + k} for k, name in enumerate(parts)}
    official = official_split([r.official_set for r in records])
    if official is not None:
        parts["official"] = official
        split_attrs["official"] = {"source": "official_set column of the dataset's metadata"}
    attrs = {
        "seed": seed,
        "count": count,
        "test_fraction": test_fraction,
        "reference_disjoint": disjoint,
        "official": official is not None,
        "excluded_flagged": int(len(records) - len(eligible)),
    }
    by_record = None
    if groups is not None:
        by_record = np.full(len(records), -1, dtype=np.int64)
        by_record[eligible] = groups
    return _Splits(parts, attrs, split_attrs, by_record)


def uneven_splits_note(splits: _Splits, test_fraction: float) -> str | None:
    """A line when random splits' test parts hold a share of the images far from the share of references
    they hold (by more than half the fraction asked, or 10 points): the splits draw whole references, so
    references of very different sizes (a custom `--references` column) give test parts of other sizes
    than the one asked; None when every one is near it, or every image is its own group."""
    if splits.groups is None:
        return None
    random = {name: split for name, split in splits.parts.items() if name.startswith(RANDOM_PREFIX)}
    far = {}
    for name, split in random.items():
        train, test = splits.groups[split["train"]], splits.groups[split["test"]]
        images = len(test) / max(1, len(train) + len(test))
        references = len(np.unique(test)) / max(1, len(np.unique(train)) + len(np.unique(test)))
        if abs(images - references) > max(0.1, test_fraction / 2):
            far[name] = images
    if not far:
        return None
    shown = ", ".join(f"{name}: {share:.0%}" for name, share in list(far.items())[:4])
    shown += ", ..." if len(far) > 4 else ""
    return (
        f"{len(far)} of {len(random)} splits have a test part far from the {test_fraction:.0%} asked ({shown}): "
        "the splits draw whole references (with their files' copies), and these hold very different numbers "
        "of images"
    )


# --- the build --------------------------------------------------------------------------------------------


def _parse(spec: DatasetSpec, root: Path, skip_bad: bool, skipped: list[tuple[str, str]]) -> list[Record]:
    def missing(name: str) -> None:
        skipped.append((name, "image file missing"))

    parse: Callable[..., list[Record]] = spec.parse
    return list(parse(root, on_missing=missing if skip_bad else None))


def _check_records(
    records: Sequence[Record], where: Path | None, spec: DatasetSpec | None = None, allow_out_of_range: bool = False
) -> None:
    if not records:
        raise DataError("no images to pack (the metadata lists none, or all were skipped)", path=where)
    low, high = spec.score_bounds if spec is not None else (math.nan, math.nan)
    bounded = math.isfinite(low) and math.isfinite(high)
    seen: set[str] = set()
    for number, record in enumerate(records, start=1):
        if record.name in seen:
            raise DataError(f"image '{record.name}' is listed twice", path=where)
        try:
            record.name.encode("utf-8")
        except UnicodeEncodeError:
            shown = record.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            raise DataError(
                f"image name {shown!r} is not valid UTF-8 (the cache stores names as UTF-8): rename the file or folder",
                path=where,
            ) from None
        seen.add(record.name)
        if not math.isfinite(record.score):
            raise DataError(f"image '{record.name}' has a non-finite score {record.score}", path=where)
        if bounded and not allow_out_of_range and not low <= record.score <= high:
            raise DataError(
                f"image '{record.name}' (entry {number}) has score {record.score:g}, outside the {low:g} to {high:g} "
                f"range of {spec.name if spec else 'the dataset'} (a wrong column or scale? --allow-out-of-range "
                "keeps it)",
                path=where,
            )
        if record.std < 0 or math.isinf(record.std):  # NaN: no std given for this image
            raise DataError(
                f"image '{record.name}' (entry {number}) has score std {record.std:g}, expected a finite value >= 0 "
                "(a wrong column?)",
                path=where,
            )
    if len(records) > 1 and len({r.score for r in records}) == 1:
        raise DataError(
            f"all {len(records)} images have the score {records[0].score:g}: nothing to rank (a wrong column?)",
            path=where,
        )
    lengths = {len(r.distribution) for r in records if r.distribution is not None}
    if len(lengths) > 1:
        raise DataError(f"rating distributions have different numbers of categories ({sorted(lengths)})", path=where)


def _reference_digests(records: Sequence[Record]) -> np.ndarray | None:
    """Per reference id, the digest of its file (0: not known, not on disk), for a dataset whose images have
    references; None when none has one. A network pretrained on one of those files (VIPNet's DPM) has seen
    every distortion of it. Kept even when no file was found, so a reader tells "not found" (zeros) from a
    cache written before iqa kept them (no array)."""
    if not any(record.ref_id >= 0 for record in records):
        return None
    paths: dict[int, Path] = {}
    for record in records:
        if record.ref_id >= 0 and record.reference_path is not None:
            paths.setdefault(record.ref_id, record.reference_path)
    digests = np.zeros(max(record.ref_id for record in records) + 1, dtype=np.uint64)
    for ref_id, path in paths.items():
        with contextlib.suppress(OSError):  # unreadable: its digest stays unknown
            digests[ref_id] = file_digest(path)
    return digests


def _distributions(records: Sequence[Record]) -> np.ndarray | None:
    """(N, K) float32 rating distributions, NaN rows for images without one; None when no image has one."""
    given = [r.distribution for r in records if r.distribution is not None]
    if not given:
        return None
    out = np.full((len(records), len(given[0])), np.nan, dtype=np.float32)
    for i, record in enumerate(records):
        if record.distribution is not None:
            out[i] = record.distribution
    return out


def _headers(
    records: Sequence[Record], policy: ResizePolicy, workers: Any, skip_bad: bool, progress: Progress
) -> _Plan:
    plan = _Plan(items=[])
    progress.start("reading image headers", len(records))
    for record, header in zip(records, read_headers([r.path for r in records], workers=workers), strict=True):
        progress.advance()
        raise_if_stopped()  # a signal's exception lost inside a library must not let the work go on
        if isinstance(header, DecodeFailure):
            if not skip_bad:
                raise header.error()
            plan.skipped.append((record.name, header.message))
            log.info(f"skipping {record.name}: {header.message}")
            continue
        plan.items.append(_Item(record, header, policy.output_size(header.width, header.height)))
    progress.finish()
    for note in content_notes([(item.record.name, item.header) for item in plan.items]):
        log.warning(note)
    return plan


# A cache whose zero padding makes it this many times larger than its images, and larger than
# PADDING_FLOOR bytes, is refused unless asked for: images of very different shapes share one canvas.
PADDING_FACTOR = 4.0
PADDING_FLOOR = 256 * 2**20


def _check_padding(
    items: Sequence[_Item], height: int, width: int, policy: ResizePolicy, allow: bool, out: Path
) -> None:
    padded = len(items) * height * width * 3
    pixels = sum(i.size[0] * i.size[1] * 3 for i in items)
    if allow or padded <= PADDING_FLOOR or padded <= PADDING_FACTOR * pixels:
        return
    raise DataError(
        f"images of very different shapes share one zero-padded {width}x{height} canvas: the cache would take "
        f"{padded / 2**20:.0f} MiB for {pixels / 2**20:.0f} MiB of images (size policy '{policy}'); give --size WxH "
        "or --short-side S, or --allow-padding to write it anyway",
        path=out,
    )


def _check_space(pixel_bytes: int, out: Path) -> None:
    """OSError (ENOSPC) before any decoding when the cache's uncompressed pixels alone would not fit where it
    is written: found at the end, a full disk costs the whole decode (hours for a large dataset, or an
    unbounded wait for a slip such as `--size 20000x20000`)."""
    import errno
    import shutil

    folder = out.absolute().parent
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent  # the folder is made later; its nearest existing parent holds the space
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # no answer (an odd file system): the write itself still reports a full disk
    if pixel_bytes > free:
        raise OSError(
            errno.ENOSPC,
            f"the cache needs at least {pixel_bytes / 2**30:.1f} GiB for its pixels and {folder} has "
            f"{free / 2**30:.1f} GiB free",
            str(out),
        )


def _canvas(items: Sequence[_Item]) -> tuple[int, int]:
    return max(i.size[1] for i in items), max(i.size[0] for i in items)


def _stream_images(
    sink: Any, items: list[_Item], policy: ResizePolicy, workers: Any, skip_bad: bool, progress: Progress
) -> tuple[list[tuple[_Item, str]], list[int]]:
    """Decode and write every item; returns the items that failed to decode, and the `file_digest` of
    each image written, in order."""
    height, width = _canvas(items)
    sink.begin(len(items), height, width)
    keep_size = policy.kind == "none"
    jobs = [DecodeJob(str(i.record.path), i.header.orientation, None if keep_size else i.size) for i in items]
    failed: list[tuple[_Item, str]] = []
    digests: list[int] = []
    slot = 0
    progress.start("decoding images", len(items))
    results = decode_images_with_digests(jobs, workers=workers, image_bytes=height * width * 3)
    for item, decoded in zip(items, results, strict=True):
        progress.advance()
        raise_if_stopped()  # a signal's exception lost in a library (h5py, Pillow) must not let the work go on
        if isinstance(decoded, DecodeFailure):
            if not skip_bad:
                raise decoded.error()
            failed.append((item, decoded.message))
            log.info(f"skipping {item.record.name}: {decoded.message}")
            continue
        result, digest = decoded
        if (result.shape[1], result.shape[0]) != item.size:
            raise DataError(
                f"decoded to {result.shape[1]}x{result.shape[0]}, expected {item.size}", path=item.record.path
            )
        if failed and not sink.compacts:
            continue  # keep decoding only to find every bad file; the images are written again
        sink.put(slot, result)
        digests.append(digest)
        slot += 1
    progress.finish()
    return failed, digests


def _dataset_root(plan: _Plan) -> str:
    """The folder the stored `names` are relative to (the parser may have found the dataset below --root)."""
    for item in plan.items:
        path, name = Path(item.record.path).resolve().as_posix(), item.record.name
        if path.endswith("/" + name):
            return path[: -len(name) - 1]
    return ""


def _attrs(
    spec: DatasetSpec, root: Path | None, policy: ResizePolicy, plan: _Plan, splits: _Splits, padded: bool
) -> dict[str, Any]:
    return {
        "format_version": F.FORMAT_VERSION,
        "dataset": spec.name,
        "title": spec.title,
        "score_type": spec.score_type,
        "native_range": [float(spec.native_range[0]), float(spec.native_range[1])],
        "lower_better": bool(spec.lower_better),
        "resize": str(policy),
        "resample": RESAMPLE_NOTE,
        "exif_orientation": "applied",
        "padded": padded,
        "count": len(plan.items),
        "source_root": str(Path(root).resolve()) if root is not None else "",
        "dataset_root": _dataset_root(plan),
        "iqa_version": __version__,
        "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "skipped": len(plan.skipped),
        "skipped_names": [name for name, _ in plan.skipped],
        "reference_disjoint": bool(splits.attrs["reference_disjoint"]),
        "split_seed": int(splits.attrs["seed"]),
        "split_count": int(splits.attrs["count"]),
        "split_test_fraction": float(splits.attrs["test_fraction"]),
    }


@dataclass(frozen=True)
class CacheOptions:
    """How `build_cache` packs a dataset (the `iqa prepare` options).

    fmt:       'h5' | 'npz' | None (from the suffix of the output, else h5).
    resize:    a policy or its string ('244x244', 'short:512', 'none'); None = the dataset's default.
    workers:   decoding processes (None = all cores; <= 1 decodes in this process).
    skip_bad:  skip missing/unreadable images (recorded in the cache) instead of failing on the first.
    splits:    number of seeded random train/test splits (0 = none); split k uses split_seed + k.
    allow_out_of_range: keep scores outside the dataset's declared bounds (an error by default).
    allow_padding: write a cache that zero padding makes many times larger than its images (refused by
               default, with the size options that avoid it).
    """

    fmt: str | None = None
    resize: str | ResizePolicy | None = None
    workers: int | None = None
    skip_bad: bool = False
    splits: int = 10
    split_seed: int = 0
    test_fraction: float = 0.2
    allow_out_of_range: bool = False
    allow_padding: bool = False


def build_cache(
    spec: DatasetSpec,
    root: Path | None,
    out: Path,
    options: CacheOptions | None = None,
    *,
    records: Sequence[Record] | None = None,
    progress: Progress | None = None,
) -> CacheSummary:
    """Pack a dataset into a cache file at `out` (written atomically) and describe what was written.

    spec:      the dataset (scores' meaning, default resize, reference_disjoint, parser).
    root:      the dataset folder given to `spec.parse` (recorded as `source_root`).
    options:   how (`CacheOptions`; default: its defaults).
    records:   already-parsed records; when given, `spec.parse` is not called.
    """
    options = options or CacheOptions()
    low, high = (float(v) for v in spec.native_range)
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        # The registered `custom` spec is a template: its range is declared per dataset (`make_spec`). Every
        # method would refuse such a cache only at training, after it was written.
        raise ConfigError(
            f"dataset '{spec.name}' declares no score range ({low:g}, {high:g}); a custom dataset is built with "
            "iqa_cli.data.datasets.custom.make_spec (or `iqa prepare custom`)"
        )
    fmt, resize, workers, skip_bad = options.fmt, options.resize, options.workers, options.skip_bad
    splits, split_seed, test_fraction = options.splits, options.split_seed, options.test_fraction
    allow_out_of_range, allow_padding = options.allow_out_of_range, options.allow_padding
    started = time.monotonic()
    progress = progress or NullProgress()
    out = Path(out)
    F.check_replaceable(out)  # a cache (or a damaged one) only, never another program's file
    fmt = F.resolve_format(fmt, out)
    policy = as_policy(resize, spec.default_resize)
    skipped: list[tuple[str, str]] = []
    if records is None:
        if root is None:
            raise DataError("no dataset root given and no records to pack")
        log.info(f"parsing {spec.title} under {root}")
        records = _parse(spec, Path(root), skip_bad, skipped)
        for name, reason in skipped:
            log.info(f"skipping {name}: {reason}")
    records = list(records)
    _check_records(records, Path(root) if root is not None else None, spec, allow_out_of_range)

    processes = min(default_workers() if workers is None else int(workers), len(records))
    log.debug(f"{len(records)} records, {max(processes, 1)} decode process(es), resize {policy}, {fmt}")
    with hold(out, "cache"), worker_pool(processes) as pool:
        plan = _headers(records, policy, pool, skip_bad, progress)
        plan.skipped[:0] = skipped
        if not plan.items:
            raise DataError("no readable images left to pack", path=root)
        # Fail on impossible splits now, not after decoding everything (they are drawn again if images drop out).
        _make_splits([item.record for item in plan.items], spec.reference_disjoint, splits, split_seed, test_fraction)
        height, width = _canvas(plan.items)
        _check_padding(plan.items, height, width, policy, allow_padding, out)
        _check_space(len(plan.items) * height * width * 3, out)
        if any(item.size != (width, height) for item in plan.items):
            log.info(
                f"images differ in size after resize '{policy}': each is stored top-left in a {width}x{height} "
                "zero-padded frame, its own size in `sizes`"
            )
        with atomic_path(out) as tmp:
            while True:
                sink = _open_sink(tmp, fmt)
                try:
                    failed, digests = _stream_images(sink, plan.items, policy, pool, skip_bad, progress)
                    if failed:
                        dropped = {id(item) for item, _ in failed}
                        plan.skipped.extend((item.record.name, reason) for item, reason in failed)
                        plan.items = [item for item in plan.items if id(item) not in dropped]
                        if not plan.items:
                            raise DataError("no readable images left to pack", path=root)
                        if not sink.shrink(len(plan.items), *_canvas(plan.items)):
                            log.info(f"rewriting the images without the {len(failed)} unreadable ones")
                            sink.close()
                            continue  # NPZ: a streamed member cannot shrink; write it again
                    kept = [item.record for item in plan.items]
                    file_digests = np.asarray(digests, dtype=np.uint64)
                    made = _make_splits(kept, spec.reference_disjoint, splits, split_seed, test_fraction, file_digests)
                    uneven = uneven_splits_note(made, test_fraction)
                    if uneven is not None:
                        log.warning(uneven)
                    copies = copy_groups(file_digests, [r.name for r in kept])
                    height, width = _canvas(plan.items)
                    padded = any(item.size != (width, height) for item in plan.items)
                    arrays: dict[str, np.ndarray] = {
                        F.SIZES: np.asarray([(i.size[1], i.size[0]) for i in plan.items], dtype=np.int32),
                        F.SCORES: np.asarray([r.score for r in kept], dtype=np.float32),
                        F.STD: np.asarray([r.std for r in kept], dtype=np.float32),
                        F.REF_IDS: np.asarray([r.ref_id for r in kept], dtype=np.int32),
                        F.FILE_DIGESTS: file_digests,
                    }
                    reference_digests = _reference_digests(kept)
                    if reference_digests is not None:
                        arrays[F.REFERENCE_DIGESTS] = reference_digests
                    distributions = _distributions(kept)
                    if distributions is not None:
                        arrays[F.DISTRIBUTIONS] = distributions
                    if any(math.isfinite(r.mos_zscore) for r in kept):
                        arrays[F.MOS_ZSCORE] = np.asarray([r.mos_zscore for r in kept], dtype=np.float32)
                    if any(r.flags for r in kept):
                        arrays[F.FLAGS] = np.asarray([r.flags for r in kept], dtype=np.uint8)
                    attrs = _attrs(spec, root, policy, plan, made, padded)
                    attrs["identical_files"] = sum(len(group) - 1 for group in copies)
                    sink.finish(arrays, [r.name for r in kept], attrs, made)
                except BaseException:
                    # Closing a file whose write failed (a full disk) fails again: the first error is the one to tell.
                    with contextlib.suppress(Exception):
                        sink.close()
                    raise
                sink.close()
                break
    if copies:
        shown = "; ".join(" = ".join(group[:3]) + (" = ..." if len(group) > 3 else "") for group in copies[:3])
        more = f"; {len(copies) - 3} more set{'s' if len(copies) > 4 else ''}" if len(copies) > 3 else ""
        log.warning(
            f"{sum(len(group) - 1 for group in copies)} image(s) are byte-identical copies of others ({shown}{more}): "
            "each set is kept on one side of every random split; remove the copies from the metadata if they are "
            "a mistake"
        )
    seconds = time.monotonic() - started
    return CacheSummary(
        path=out,
        format=fmt,
        dataset=spec.name,
        count=len(plan.items),
        shape=(len(plan.items), height, width, 3),
        padded=padded,
        resize=str(policy),
        skipped=plan.skipped,
        splits={name: {part: int(len(ix)) for part, ix in parts.items()} for name, parts in made.parts.items()},
        identical_files=copies,
        bytes=out.stat().st_size,
        seconds=seconds,
    )
