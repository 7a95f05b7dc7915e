"""`merge_parts`: join the shards of a distorted set (`--shard i/n` runs) into one cache.

The parts must come from the same references and settings (checked through their attributes) and
cover disjoint reference ranges; they are concatenated in reference order, so merging every shard
gives the same images, labels and splits as one unsharded run. Images are copied in blocks and the
result is written atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from iqa_cli.atomic import atomic_path
from iqa_cli.data import cache_format as F
from iqa_cli.data.cache import open_cache
from iqa_cli.distort import store
from iqa_cli.distort.generate import DEFAULT_SPLITS, DEFAULT_TEST_FRACTION, distorted_splits
from iqa_cli.errors import ConfigError, DataError
from iqa_cli.h5files import open_h5
from iqa_cli.progress import NullProgress, Progress

log = logging.getLogger(__name__)

# Attributes that must agree between parts: they decide the pixels and the labels.
SAME_SETTINGS = (
    "kind",
    "distortion_types",
    "distortion_levels",
    "distortion_seed",
    "per_ref",
    "resize",
    "reference_count",
    "references_digest",
)
BLOCK = 32  # images copied per read/write
_EXTRA = (store.LABELS, store.DIST_TYPE, store.LEVEL)


@dataclass
class MergeSummary:
    path: Path
    count: int
    parts: int
    reference_range: tuple[int, int]
    complete: bool  # the parts cover every reference
    seconds: float
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "count": self.count,
            "parts": self.parts,
            "reference_range": list(self.reference_range),
            "complete": self.complete,
            "seconds": round(self.seconds, 3),
            "bytes": self.bytes,
        }


def _check_parts(caches: list[Any]) -> list[Any]:
    first = caches[0]
    for cache in caches:
        if cache.attrs.get("kind") != store.KIND:
            raise DataError("is not a distorted-image cache (written by `iqa prepare distorted`)", path=cache.path)
        for key in SAME_SETTINGS:
            if cache.attrs.get(key) != first.attrs.get(key):
                raise DataError(
                    f"was generated with another {key} ({cache.attrs.get(key)!r}) than {first.path.name} "
                    f"({first.attrs.get(key)!r})",
                    path=cache.path,
                )
    ordered = sorted(caches, key=lambda c: tuple(c.attrs["reference_range"]))
    for before, after in zip(ordered, ordered[1:], strict=False):
        if before.attrs["reference_range"][1] > after.attrs["reference_range"][0]:
            shards = [str(c.attrs.get("shard", "")) for c in (after, before)]
            counts = {shard.partition("/")[2] for shard in shards}
            why = (
                f"shard {shards[0]} and shard {shards[1]} cut the references into other numbers of parts: merge the "
                "parts of one --shard i/N"
                if len(counts) > 1 and "" not in counts
                else "the same shard given twice?"
            )
            raise DataError(
                f"covers references {after.attrs['reference_range']} which overlap those of {before.path.name} "
                f"{before.attrs['reference_range']} ({why})",
                path=after.path,
            )
    return ordered


def merge_parts(
    parts: Sequence[str | Path],
    out: str | Path,
    *,
    splits: int = DEFAULT_SPLITS,
    split_seed: int = 0,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    allow_partial: bool = False,
    progress: Progress | None = None,
) -> MergeSummary:
    """Concatenate distorted-set parts (in reference order) into `out`, with fresh splits over all of them.

    Parts that leave references out (a shard not given, or not finished) are refused, naming the
    missing ranges, unless `allow_partial`: a pretraining set silently short of a shard is worse
    than an error."""
    import h5py

    started = time.monotonic()
    progress = progress or NullProgress()
    out = Path(out).expanduser()
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise ConfigError(f"the merged cache is HDF5: use a .h5 name, not {out.name}")
    F.check_replaceable(out)
    if not parts:
        raise ConfigError("give at least one part to merge")
    paths = [Path(p).expanduser() for p in parts]
    if len(set(p.resolve() for p in paths)) != len(paths):
        raise ConfigError("the same part is given twice")
    if out.resolve() in {p.resolve() for p in paths}:
        raise ConfigError(f"--out {out} is one of the parts; write the merged cache to a new file")
    caches = [open_cache(p) for p in paths]
    try:
        ordered = _check_parts(caches)
        total = sum(len(c) for c in ordered)
        _, height, width, _ = ordered[0].shape
        ranges = [tuple(c.attrs["reference_range"]) for c in ordered]
        reference_count = int(ordered[0].attrs["reference_count"])
        contiguous = all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
        complete = contiguous and ranges[0][0] == 0 and ranges[-1][1] == reference_count
        span = (ranges[0][0], ranges[-1][1])
        if not complete and not allow_partial:
            edges = [0, *[x for r in ranges for x in r], reference_count]
            gaps = [f"{a}..{b}" for a, b in zip(edges[::2], edges[1::2], strict=True) if b > a]
            raise DataError(
                f"the parts leave references {', '.join(gaps)} of {reference_count} out (a shard is missing); "
                "give every shard, or --allow-partial to merge what is there"
            )

        with open_h5(ordered[0].path, "r") as handle:
            references = [n.decode() if isinstance(n, bytes) else str(n) for n in handle[store.REFERENCES][()]]
            table = handle[store.TABLE][()]
        arrays: dict[str, list[np.ndarray]] = {k: [] for k in (F.SIZES, F.SCORES, F.STD, F.REF_IDS, *_EXTRA)}
        names: list[str] = []
        # Each part fills the digests of its own references; a part written before iqa kept them has none,
        # and then the merged cache keeps none (a DPM trained on it records no references).
        digests: np.ndarray | None = np.zeros(len(references), dtype=np.uint64)
        for cache in ordered:
            with open_h5(cache.path, "r") as handle:
                for key in arrays:
                    arrays[key].append(np.asarray(handle[key][()]))
                if digests is not None and store.REFERENCE_DIGESTS in handle:
                    digests = np.maximum(digests, np.asarray(handle[store.REFERENCE_DIGESTS][()], dtype=np.uint64))
                else:
                    digests = None
            names.extend(cache.names)
        merged = {k: np.concatenate(v) for k, v in arrays.items()}
        split_parts, split_attrs = distorted_splits(
            merged[F.REF_IDS], splits, split_seed, test_fraction, digests, references
        )

        attrs = dict(ordered[0].attrs)
        attrs.update(
            count=total,
            shard="1/1" if complete else f"merged {len(ordered)} parts",
            reference_range=[int(span[0]), int(span[1])],
            not_applicable=sum(int(c.attrs.get("not_applicable", 0)) for c in ordered),
            split_seed=int(split_attrs["seed"]),
            split_count=int(split_attrs["count"]),
            split_test_fraction=float(split_attrs["test_fraction"]),
        )
        attrs["created"] = datetime.now(timezone.utc).replace(microsecond=0).isoformat()

        progress.start(f"merging {len(ordered)} parts", total)
        with atomic_path(out) as tmp:
            with open_h5(tmp, "w", libver="latest") as handle:
                images = handle.create_dataset(
                    F.IMAGES, shape=(total, height, width, 3), chunks=(1, height, width, 3), dtype=np.uint8
                )
                slot = 0
                for cache in ordered:
                    for begin in range(0, len(cache), BLOCK):
                        block = cache.images[begin : begin + BLOCK]
                        images[slot : slot + len(block)] = block
                        slot += len(block)
                        progress.advance(len(block))
                for key, value in merged.items():
                    handle.create_dataset(key, data=value)
                string = h5py.string_dtype("utf-8")
                handle.create_dataset(F.NAMES, data=np.asarray(names, dtype=object), dtype=string)
                handle.create_dataset(store.REFERENCES, data=np.asarray(references, dtype=object), dtype=string)
                handle.create_dataset(store.TABLE, data=table, dtype=string)
                if digests is not None:
                    handle.create_dataset(store.REFERENCE_DIGESTS, data=digests)
            store.finalize(tmp, attrs, split_parts, split_attrs)
        progress.finish()
    finally:
        for cache in caches:
            cache.close()
    if not complete:
        log.info(f"note: the parts cover references {span[0]}..{span[1]} of {reference_count}, not all of them")
    return MergeSummary(out, total, len(ordered), span, complete, time.monotonic() - started, out.stat().st_size)
