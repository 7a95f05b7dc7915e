"""`generate_distorted`: references in, a labelled cache of distorted images out (see `store` for the file).

The work is split into one task per (reference, type): a worker decodes the reference at the target
size, draws every selected level of that type from the (seed, reference, type, level) random stream
and returns the images. Results come back in order with a bounded number of tasks in flight, are
appended to the partial file one reference at a time, and a checkpoint (flush + progress sidecar)
is written every few seconds and on any interruption. Because every random stream is tied to the
reference's global index, a resumed run, a sharded run (`shard=(i, n)`: the i-th contiguous slice of
references) merged with `merge_parts`, and a single uninterrupted run hold identical images.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from iqa_cli.atomic import naming_refused_writes
from iqa_cli.data.cache_format import check_replaceable
from iqa_cli.data.decode import decode_image, default_workers, file_digest, raise_if_not_the_image, worker_pool
from iqa_cli.data.records import LEVEL_SCORES
from iqa_cli.data.resize import RESAMPLE_NOTE
from iqa_cli.data.splits import random_splits
from iqa_cli.distort import store
from iqa_cli.distort.base import NUM_LEVELS, NotApplicable
from iqa_cli.distort.refs import Reference, references_digest, shard_range
from iqa_cli.distort.registry import NUM_CLASSES, NUM_TYPES, TYPES
from iqa_cli.distort.seeding import choose_types, pair_rng
from iqa_cli.errors import ConfigError, DataError
from iqa_cli.locks import lock_path, lock_refused
from iqa_cli.progress import NullProgress, Progress
from iqa_cli.seeds import check_seed
from iqa_cli.stop import raise_if_stopped
from iqa_cli.version import __version__

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from filelock import FileLock

DEFAULT_SIZE = (512, 384)  # W x H of the KADIS-700k references
MIN_SIDE = 64  # the patch types need room: 32x32 colour blocks, 16x16 patches moved within 16 px margins
DEFAULT_SPLITS = 1
# VIPNet holds out 50,000 of its 6,000,000 images (0.8 %) for validation; here the hold-out is by
# reference, so no scene is seen on both sides.
DEFAULT_TEST_FRACTION = 0.01
CHECKPOINT_SECONDS = 10.0
WALK_TYPE = 27  # chromatic aberration: VIPNet walks its second list until enough references succeed
WALK_TARGET = 40_000  # additional_dataset_generator.m: `if img_num==40000 break`
DATASET_NAME = "distorted"
TITLE = "Synthetic distortions (VIPNet DPM pretraining: 30 types x 5 levels, KADID-10k types 1-25)"


@dataclass(frozen=True)
class Settings:
    """Everything that decides the pixels and labels; a resumed run and merged parts must agree on it."""

    types: tuple[int, ...]
    levels: tuple[int, ...]
    seed: int
    per_ref: int  # 0 = every selected type for every reference
    width: int
    height: int
    reference_count: int
    references_digest: str
    # VIPNet's two lists (--refs-list): the first `main_count` references get every selected type but 27;
    # type 27 walks all references in order until `walk_target` of them succeed. 0: not in use.
    main_count: int = 0
    walk_target: int = 0

    def to_dict(self) -> dict[str, Any]:
        out = {
            "types": list(self.types),
            "levels": list(self.levels),
            "seed": self.seed,
            "per_ref": self.per_ref,
            "size": f"{self.width}x{self.height}",
            "reference_count": self.reference_count,
            "references_digest": self.references_digest,
        }
        if self.main_count:
            out.update(main_count=self.main_count, walk_target=self.walk_target)
        return out

    def types_of(self, ref_id: int) -> tuple[int, ...]:
        """The types planned for a reference (type 27 under --refs-list is cut at `walk_target` successes)."""
        chosen = choose_types(self.seed, ref_id, self.types, self.per_ref or None)
        if not self.main_count:
            return chosen
        walked = (WALK_TYPE,) if WALK_TYPE in self.types and self.walk_target else ()
        if ref_id >= self.main_count:
            return walked
        return tuple(t for t in chosen if t != WALK_TYPE) + walked


@dataclass
class GenerateSummary:
    path: Path
    count: int  # images in the file
    references: int  # references of this file (its shard)
    reference_range: tuple[int, int]
    shard: tuple[int, int]
    types: list[int]
    levels: list[int]
    not_applicable: int  # (reference, type) pairs left out (type 27 without all five PSNR levels)
    resumed_references: int  # references already done when this run started
    workers: int
    seconds: float
    bytes: int
    generated: int = field(default=0)  # images produced by this run (excludes resumed ones)
    walk_succeeded: int | None = None  # --refs-list: references that gave type 27 (of walk_target)

    @property
    def images_per_second(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "count": self.count,
            "references": self.references,
            "reference_range": list(self.reference_range),
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "types": self.types,
            "levels": self.levels,
            "not_applicable": self.not_applicable,
            "resumed_references": self.resumed_references,
            "generated": self.generated,
            "workers": self.workers,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "images_per_second_per_worker": round(self.images_per_second / max(1, self.workers), 2),
            "bytes": self.bytes,
            **({"walk_succeeded": self.walk_succeeded} if self.walk_succeeded is not None else {}),
        }


# --- argument checks --------------------------------------------------------------------------------


def parse_size(size: str | tuple[int, int] | None) -> tuple[int, int]:
    """'WxH' or (W, H) -> (W, H), each side at least MIN_SIDE."""
    if size is None:
        return DEFAULT_SIZE
    if isinstance(size, str):
        from iqa_cli.data.resize import parse_policy

        policy = parse_policy(size)
        if policy.kind != "fixed":
            raise ConfigError(f"--size must be WxH (e.g. 512x384), got {size!r}: distorted images share one size")
        width, height = policy.width, policy.height
    else:
        width, height = (int(v) for v in size)
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ConfigError(f"--size {width}x{height} is too small: each side must be at least {MIN_SIDE} pixels")
    return width, height


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int]:
    """'i/n' (1-based i) -> (i, n)."""
    if text is None:
        return 1, 1
    if isinstance(text, tuple):
        index, total = text
    else:
        try:
            index_text, total_text = str(text).split("/")
            index, total = int(index_text), int(total_text)
        except ValueError:
            raise ConfigError(f"--shard must be i/n such as 2/8, got {text!r}") from None
    if total < 1 or not 1 <= index <= total:
        raise ConfigError(f"--shard {index}/{total}: shards are numbered 1..n")
    return index, total


def _check_selection(
    types: Sequence[int] | None, levels: Sequence[int] | None, per_ref: int | None
) -> tuple[list[int], list[int], int]:
    types = sorted(set(TYPES if types is None else (int(t) for t in types)))
    levels = sorted(set(range(1, NUM_LEVELS + 1) if levels is None else (int(v) for v in levels)))
    if not types or any(t not in TYPES for t in types):
        raise ConfigError(f"--types must name distortion types among 1..{NUM_TYPES}, got {types}")
    if not levels or any(not 1 <= v <= NUM_LEVELS for v in levels):
        raise ConfigError(f"--levels must be among 1..{NUM_LEVELS}, got {levels}")
    if per_ref is not None and not 1 <= int(per_ref) <= len(types):
        raise ConfigError(f"--per-ref must be between 1 and the number of selected types ({len(types)}), got {per_ref}")
    return types, levels, (0 if per_ref is None or int(per_ref) >= len(types) else int(per_ref))


def _as_references(refs: Sequence[Reference | str | Path]) -> list[Reference]:
    out = [r if isinstance(r, Reference) else Reference(Path(r), Path(r).stem) for r in refs]
    if not out:
        raise DataError("no reference images given")
    return out


# --- the work done in worker processes ------------------------------------------------------------------


@dataclass(frozen=True)
class _Task:
    path: str
    ref_id: int
    type_id: int
    levels: tuple[int, ...]
    seed: int
    size: tuple[int, int]


_LAST_REFERENCE: dict[str, Any] = {}  # per process: the tasks of one reference usually follow each other


def load_reference(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """A reference as uint8 H x W x 3 at `size` = (W, H) (EXIF-oriented, bicubic), or a one-line DataError."""
    try:  # the file's identity too: a reference replaced under its name between two runs is read again
        info = os.stat(path)
        key: tuple[Any, ...] | None = (str(path), tuple(size), info.st_ino, info.st_size, info.st_mtime_ns)
    except OSError:
        key = None  # never served from memory: the decoder names what is wrong
    if key is not None and _LAST_REFERENCE.get("key") == key:
        return _LAST_REFERENCE["image"]
    try:
        image = decode_image(path, (int(size[0]), int(size[1])))
    except Exception as exc:  # any decoder failure means this reference is unusable (but see `not_the_image`)
        raise_if_not_the_image(exc, path)
        text = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"cannot read reference image ({type(exc).__name__}: {text})", path=path) from None
    _LAST_REFERENCE.update(key=key, image=image)
    return image


def _run_task(task: _Task) -> np.ndarray | None:
    """The task's images (len(levels), H, W, 3), or None when the type does not apply to this reference."""
    reference = load_reference(task.path, task.size)
    fn = TYPES[task.type_id].fn
    out = np.empty((len(task.levels), *reference.shape), dtype=np.uint8)
    try:
        for k, level in enumerate(task.levels):
            out[k] = fn(reference, level, pair_rng(task.seed, task.ref_id, task.type_id, level))
    except NotApplicable:
        return None
    return out


def _ordered(pool: Any, func: Callable[[Any], Any], tasks: Iterable[Any], window: int) -> Iterator[tuple[Any, Any]]:
    """(task, func(task)) in task order, at most `window` tasks in flight (bounded memory)."""
    if pool is None:
        for task in tasks:
            yield task, func(task)
        return
    source = iter(tasks)
    pending = deque((task, pool.apply_async(func, (task,))) for task in islice(source, max(1, window)))
    while pending:
        task, result = pending.popleft()
        value = result.get()
        following = next(source, None)
        if following is not None:
            pending.append((following, pool.apply_async(func, (following,))))
        yield task, value


# --- the run ------------------------------------------------------------------------------------------


def same_reference_files(reference_digests: np.ndarray | None) -> np.ndarray | None:
    """Each reference's group: the first reference whose file is byte-identical to it (its own id where
    no other is, or its digest is unknown); None without digests."""
    if reference_digests is None:
        return None
    digests = np.asarray(reference_digests, dtype=np.uint64)
    groups = np.arange(digests.size, dtype=np.int64)
    known = np.flatnonzero(digests != 0)
    _, first, inverse = np.unique(digests[known], return_index=True, return_inverse=True)
    groups[known] = known[first][inverse.reshape(-1)]
    return groups


def distorted_splits(
    ref_ids: np.ndarray,
    count: int,
    seed: int,
    test_fraction: float,
    reference_digests: np.ndarray | None,
    references: Sequence[str],
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Random splits of a distorted set, disjoint in references (none when it has fewer than two). A
    reference file that is a byte-identical copy of another (`reference_digests`) counts as that one, so
    the distortions of one picture never sit on both sides (a DPM's validation part would hold pictures
    it trained on)."""
    groups = same_reference_files(reference_digests)
    if groups is not None and ref_ids.size:
        copies = np.flatnonzero(groups != np.arange(groups.size))
        if copies.size:
            one = int(copies[0])
            log.warning(
                f"{copies.size} reference file(s) are byte-identical copies of others (e.g. {references[one]} = "
                f"{references[int(groups[one])]}): their distortions are kept on one side of every split, with "
                "the original's"
            )
        ref_ids = groups[np.asarray(ref_ids, dtype=np.int64)]
    if count <= 0 or len(np.unique(ref_ids)) < 2:
        return {}, {"seed": seed, "count": 0, "test_fraction": test_fraction, "reference_disjoint": True,
                    "official": False}  # fmt: skip
    parts = random_splits(len(ref_ids), count=count, seed=seed, test_fraction=test_fraction, ref_ids=ref_ids)
    attrs = {"seed": seed, "count": count, "test_fraction": test_fraction, "reference_disjoint": True,
             "official": False}  # fmt: skip
    return parts, attrs


def distortion_table(types: Sequence[int]) -> list[dict[str, Any]]:
    """The selected types as JSON-ready rows (stored in the cache, printed by the CLI)."""
    return [
        {
            "id": t,
            "slug": TYPES[t].slug,
            "name": TYPES[t].name,
            "parameter": TYPES[t].parameter,
            "levels": [float(v) if isinstance(v, float) else v for v in TYPES[t].levels],
            "source": TYPES[t].source,
            "substitute": TYPES[t].substitute,
        }
        for t in types
    ]


def cache_attrs(
    settings: Settings,
    *,
    count: int,
    shard: tuple[int, int],
    reference_range: tuple[int, int],
    not_applicable: int,
    source_root: str,
    split_attrs: dict[str, Any],
    name: str = DATASET_NAME,
) -> dict[str, Any]:
    return {
        "format_version": 1,
        "kind": store.KIND,
        "dataset": name,
        "title": TITLE,
        "score_type": LEVEL_SCORES,
        "native_range": [1.0, float(NUM_LEVELS)],
        "lower_better": True,
        "resize": f"{settings.width}x{settings.height}",
        "resample": RESAMPLE_NOTE,
        "exif_orientation": "applied",
        "padded": False,
        "count": int(count),
        "source_root": source_root,
        "iqa_version": __version__,
        "created": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "skipped": 0,
        "skipped_names": [],
        "reference_disjoint": True,
        "split_seed": int(split_attrs["seed"]),
        "split_count": int(split_attrs["count"]),
        "split_test_fraction": float(split_attrs["test_fraction"]),
        "distortion_types": list(settings.types),
        "distortion_levels": list(settings.levels),
        "distortion_seed": int(settings.seed),
        "per_ref": int(settings.per_ref),
        "num_classes": NUM_CLASSES,
        "label_rule": "(dist_type - 1) * 5 + (level - 1)",
        "reference_count": int(settings.reference_count),
        "references_digest": settings.references_digest,
        "shard": f"{shard[0]}/{shard[1]}",
        "reference_range": [int(reference_range[0]), int(reference_range[1])],
        "not_applicable": int(not_applicable),
    }


def _fresh_state(settings: Settings, shard: tuple[int, int]) -> dict[str, Any]:
    return {"settings": settings.to_dict(), "shard": list(shard), "references_done": 0, "images": 0,
            "not_applicable": 0}  # fmt: skip


def _open_partial(
    out: Path,
    settings: Settings,
    shard: tuple[int, int],
    names: list[str],
    table: str,
    resume: bool,
    progress: Progress,
) -> tuple[store.PartialFile, dict[str, Any]]:
    partial = store.partial_path(out)
    state = store.read_progress(out) if resume else None
    if resume and state is not None and partial.is_file():
        if state.get("settings") != settings.to_dict() or list(state.get("shard", [])) != list(shard):
            saved = dict(state.get("settings", {}), shard=state.get("shard"))
            raise ConfigError(
                f"--resume: the partial run at {partial} was started with other settings ({json.dumps(saved)}); "
                "use the same references and options, or start again without --resume"
            )
        handle = store.PartialFile.open(partial, settings.height, settings.width, int(state["images"]))
        log.info(f"resuming {out.name}: {state['references_done']} references ({state['images']} images) done")
        return handle, state
    if resume:
        log.info(f"nothing to resume for {out} (no partial run found); starting from the beginning")
    elif partial.exists():
        log.info(f"discarding the partial run at {partial} (pass --resume to continue it instead)")
    with contextlib.suppress(FileNotFoundError):
        store.progress_path(out).unlink()
    handle = store.PartialFile.create(partial, settings.height, settings.width, names, table)
    return handle, _fresh_state(settings, shard)


def _lock(out: Path) -> FileLock:
    from filelock import FileLock, Timeout

    lock = FileLock(str(lock_path(out)))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise ConfigError(f"another iqa process is writing {out} (lock {lock_path(out)})") from None
    except OSError as exc:  # ENOLCK: NFS without its lock daemon (a missing flock falls back to lock files)
        raise lock_refused(lock_path(out), exc, "write the set to a disk whose locks work") from None
    return lock


@dataclass(frozen=True)
class DistortOptions:
    """What `generate_distorted` writes (the `iqa prepare distorted` options).

    types:     type ids 1..30 (default all); levels: 1..5 (default all).
    per_ref:   draw this many of the selected types per reference (seeded); None = all of them.
    workers:   processes (None = all cores; <= 1 works in this process).
    resume:    continue the partial run of the output (same references and settings) instead of starting over.
    shard:     (i, n) or 'i/n': write only the i-th of n contiguous slices of the references.
    size:      (W, H) or 'WxH' every reference is resized to (default 512x384, the KADIS-700k size).
    splits:    reference-disjoint train/test splits to store (split k uses split_seed + k).
    main_count, walk_target: VIPNet's two reference lists (`authors_reference_lists`): the first
               `main_count` references get every selected type but 27; type 27 walks every reference in
               order until `walk_target` succeed (its five PSNR levels found), as the authors' generator.
    """

    types: Sequence[int] | None = None
    levels: Sequence[int] | None = None
    seed: int = 0
    per_ref: int | None = None
    workers: int | None = None
    resume: bool = False
    shard: tuple[int, int] | str | None = None
    size: tuple[int, int] | str | None = None
    splits: int = DEFAULT_SPLITS
    split_seed: int = 0
    test_fraction: float = DEFAULT_TEST_FRACTION
    source_root: str | Path | None = None
    name: str = DATASET_NAME
    checkpoint_seconds: float = CHECKPOINT_SECONDS
    main_count: int = 0
    walk_target: int = 0


def generate_distorted(
    refs: Sequence[Reference | str | Path],
    out: str | Path,
    options: DistortOptions | None = None,
    *,
    progress: Progress | None = None,
) -> GenerateSummary:
    """Distort every reference of the shard with the selected types and levels into the cache `out`.

    refs:      the full reference list (`list_references`); ids are positions in it, also under --shard.
    options:   what to write (`DistortOptions`; default: its defaults).
    """
    o = options or DistortOptions()
    types, levels, seed, per_ref, workers, resume = o.types, o.levels, o.seed, o.per_ref, o.workers, o.resume
    shard, size, splits, split_seed, test_fraction = o.shard, o.size, o.splits, o.split_seed, o.test_fraction
    source_root, name, checkpoint_seconds = o.source_root, o.name, o.checkpoint_seconds
    main_count, walk_target = o.main_count, o.walk_target
    started = time.monotonic()
    progress = progress or NullProgress()
    out = Path(out).expanduser()
    if out.suffix.lower() not in (".h5", ".hdf5"):
        raise ConfigError(f"the distorted cache is HDF5 (it is written incrementally): use a .h5 name, not {out.name}")
    check_replaceable(out)  # a cache (or an unfinished one) only, never another program's file
    references = _as_references(refs)
    types_list, levels_list, per_ref_value = _check_selection(types, levels, per_ref)
    width, height = parse_size(size)
    shard = parse_shard(shard)
    start, stop = shard_range(len(references), shard)
    if stop <= start:
        raise ConfigError(f"--shard {shard[0]}/{shard[1]} gets no references (there are only {len(references)})")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    check_seed(seed, "--seed")
    check_seed(split_seed, "--split-seed")
    if main_count and not 0 < main_count <= len(references):
        raise ConfigError(f"the main reference list ({main_count}) must be part of the {len(references)} references")
    if main_count and shard != (1, 1):
        raise ConfigError("--refs-list: the type-27 walk counts successes over the whole list; run it unsharded")
    if main_count and walk_target < 0:
        raise ConfigError(f"--walk-target must be positive, got {walk_target}")
    settings = Settings(
        tuple(types_list), tuple(levels_list), int(seed), per_ref_value, width, height,
        len(references), references_digest(references), int(main_count), int(walk_target) if main_count else 0,
    )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        # A full disk or quota: one line naming the cache (`--resume` goes on from the last checkpoint).
        with naming_refused_writes(out):
            if resume and not store.partial_path(out).exists():
                done = _already_complete(out, settings, shard, started)
                if done is not None:
                    log.info(f"{out} is already complete; nothing to resume")
                    return done
            table = json.dumps(distortion_table(settings.types))
            partial, state = _open_partial(out, settings, shard, [r.name for r in references], table, resume, progress)
            try:
                generated, pool_size = _generate(
                    partial, state, references, start, stop, settings, workers, out, progress, checkpoint_seconds
                )
                ref_ids = store.read_int_array(partial.file, "ref_ids")
                digests = (
                    np.asarray(partial.file[store.REFERENCE_DIGESTS][()], dtype=np.uint64)
                    if store.REFERENCE_DIGESTS in partial.file
                    else None
                )
                count = partial.count
            finally:
                partial.close()
            split_parts, split_attrs = distorted_splits(
                ref_ids, splits, split_seed, test_fraction, digests, [r.name for r in references]
            )
            attrs = cache_attrs(
                settings,
                count=count,
                shard=shard,
                reference_range=(start, stop),
                not_applicable=int(state["not_applicable"]),
                source_root=str(source_root) if source_root is not None else "",
                split_attrs=split_attrs,
                name=name,
            )
            store.finalize(partial.path, attrs, split_parts, split_attrs)
            raise_if_stopped()
            os.replace(partial.path, out)
            with contextlib.suppress(FileNotFoundError):
                store.progress_path(out).unlink()
    finally:
        lock.release()
        with contextlib.suppress(OSError):
            lock_path(out).unlink()
    return GenerateSummary(
        path=out,
        count=count,
        references=stop - start,
        reference_range=(start, stop),
        shard=shard,
        types=types_list,
        levels=levels_list,
        not_applicable=int(state["not_applicable"]),
        resumed_references=int(state.get("resumed_from", 0)),
        workers=pool_size,
        seconds=time.monotonic() - started,
        bytes=out.stat().st_size,
        generated=generated,
        walk_succeeded=int(state.get("walk_succeeded", 0)) if settings.main_count else None,
    )


def _already_complete(out: Path, settings: Settings, shard: tuple[int, int], started: float) -> GenerateSummary | None:
    """The summary of `out` when it is a finished cache of exactly these settings and shard, else None."""
    from iqa_cli.data.cache import open_cache

    if not out.is_file():
        return None
    try:
        with open_cache(out) as cache:
            attrs, count = cache.attrs, len(cache)
    except DataError:
        return None
    same = (
        attrs.get("kind") == store.KIND
        and attrs.get("distortion_types") == list(settings.types)
        and attrs.get("distortion_levels") == list(settings.levels)
        and attrs.get("distortion_seed") == settings.seed
        and attrs.get("per_ref") == settings.per_ref
        and attrs.get("resize") == f"{settings.width}x{settings.height}"
        and attrs.get("references_digest") == settings.references_digest
        and attrs.get("shard") == f"{shard[0]}/{shard[1]}"
    )
    if not same:
        return None
    start, stop = (int(v) for v in attrs["reference_range"])
    return GenerateSummary(
        path=out,
        count=count,
        references=stop - start,
        reference_range=(start, stop),
        shard=shard,
        types=list(settings.types),
        levels=list(settings.levels),
        not_applicable=int(attrs.get("not_applicable", 0)),
        resumed_references=stop - start,
        workers=0,
        seconds=time.monotonic() - started,
        bytes=out.stat().st_size,
    )


def _generate(
    partial: store.PartialFile,
    state: dict[str, Any],
    references: list[Reference],
    start: int,
    stop: int,
    settings: Settings,
    workers: int | None,
    out: Path,
    progress: Progress,
    checkpoint_seconds: float,
) -> tuple[int, int]:
    """Produce the references of [start, stop) not done yet; returns (images generated, workers used)."""
    first = start + int(state["references_done"])
    state["resumed_from"] = int(state["references_done"])
    # (ref_id, chosen types) per reference; with every type chosen the tuples are one shared object, so
    # even 140,000 references cost little memory. Tasks are made lazily from it.
    plan = [(ref_id, settings.types_of(ref_id)) for ref_id in range(first, stop)]
    size = (settings.width, settings.height)
    walk = {"succeeded": int(state.get("walk_succeeded", 0))}  # type-27 references that succeeded so far

    def walking() -> bool:
        return bool(settings.walk_target) and walk["succeeded"] < settings.walk_target

    def make_tasks() -> Iterator[_Task]:
        for ref_id, chosen in plan:
            if settings.main_count and ref_id >= settings.main_count and not walking():
                return  # the walk is over and no other type is left: the rest of the list is not read
            for type_id in chosen:
                yield _Task(str(references[ref_id].path), ref_id, type_id, settings.levels, settings.seed, size)

    tasks = make_tasks()
    expected = {ref_id: len(chosen) for ref_id, chosen in plan}
    task_count = sum(expected.values())
    count = default_workers() if workers is None else int(workers)
    count = max(1, min(count, task_count))
    generated = 0
    last_checkpoint = time.monotonic()

    def checkpoint() -> None:
        partial.flush()
        store.write_progress(out, {k: v for k, v in state.items() if k != "resumed_from"})

    progress.start(f"distorting {stop - first} references", task_count * len(settings.levels))
    current: int | None = None
    received: list[tuple[_Task, np.ndarray | None]] = []
    dropped = 0
    try:
        with worker_pool(count) as pool:
            for task, images in _ordered(pool.pool, _run_task, tasks, 2 * pool.count):
                if current is not None and task.ref_id != current:
                    raise AssertionError("tasks arrived out of order")  # _ordered keeps order; guard anyway
                current = task.ref_id
                if settings.main_count and task.type_id == WALK_TYPE:
                    # Results arrive in list order, so the cut falls exactly where the authors' walk stops;
                    # tasks sent ahead past it are dropped (neither kept nor counted as not applicable).
                    if not walking():
                        images = None
                        dropped += 1
                    elif images is not None:
                        walk["succeeded"] += 1
                received.append((task, images))
                progress.advance(len(settings.levels))
                if len(received) < expected[current]:
                    continue
                group = _group(references[current].name, current, received, settings)
                if len(group):  # the file the worker just read: served from the page cache
                    with contextlib.suppress(OSError):  # gone since: its digest stays unknown (0)
                        group.reference_digest = file_digest(references[current].path)
                partial.append(group)
                generated += len(group)
                skipped = sum(1 for _, im in received if im is None) - dropped
                # One update, so an interruption never leaves the counters half-changed.
                state.update(
                    images=partial.count,
                    references_done=current - start + 1,
                    not_applicable=int(state["not_applicable"]) + skipped,
                    walk_succeeded=walk["succeeded"],
                )
                current, received, dropped = None, [], 0
                # A signal's exception lost in a library: stop at this whole reference (the handler
                # below records it for --resume) rather than only at the final commit.
                raise_if_stopped()
                if time.monotonic() - last_checkpoint >= checkpoint_seconds:
                    checkpoint()
                    last_checkpoint = time.monotonic()
            count = pool.count
        checkpoint()
    except BaseException:
        # Record what is complete so `--resume` continues from here; the reference in progress is redone.
        with contextlib.suppress(Exception):
            partial.truncate(int(state["images"]))
            checkpoint()
        raise
    finally:
        progress.finish()
    return generated, count


def _group(name: str, ref_id: int, received: list[tuple[_Task, np.ndarray | None]], settings: Settings) -> store.Group:
    arrays = [images for _, images in received if images is not None]
    types, levels, names = [], [], []
    for task, images in received:
        if images is None:
            continue
        for level in task.levels:
            types.append(task.type_id)
            levels.append(level)
            names.append(store.image_name(name, task.type_id, level))
    stacked = np.concatenate(arrays) if arrays else np.empty((0, settings.height, settings.width, 3), np.uint8)
    return store.Group(ref_id, stacked, types, levels, names)
