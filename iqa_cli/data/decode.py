"""Reading images: headers first (sizes, EXIF orientation), then parallel decoding to uint8 RGB.

Two passes, both in worker processes:

1. `read_headers` opens every file without decoding pixels (Pillow reads only the header) to learn
   its size and EXIF orientation, so the cache can be allocated with its final shape before any
   pixel is decoded.
2. `decode_images` decodes, orients and resizes each image (see `iqa_cli.data.resize`) to an
   H x W x 3 uint8 RGB array and yields them in input order.

EXIF orientation is applied (the image is stored the way a viewer shows it, which is how the raters
saw it and what OpenCV's ``imread``, used by the method authors, does by default). The orientation read
in the header pass is the one applied in the decode pass, so sizes never change between the passes.
Grey, palette, CMYK and alpha images become RGB (alpha is dropped); 16-bit images are scaled to 8 bits.

Failures (unreadable, truncated, not an image) are returned as `DecodeFailure` values, not raised, so
the caller decides between a `DataError` naming the file and skipping it (`--skip-bad`). Truncated
files are always failures: Pillow's ``LOAD_TRUNCATED_IMAGES`` stays off.

Memory stays bounded: work is sent in small chunks with at most a fixed byte budget of decoded
images in flight (a sliding window of ordered async tasks), so a slow writer makes the workers wait
instead of piling results up in RAM. ``workers <= 1`` decodes in the calling process.

The pool cannot deadlock (`ProcessWorkers`): every worker has a pipe of its own, so a worker that
dies (the OOM killer, `kill -9`), even halfway through sending a decoded image, ends that pipe and
fails the command with one line instead of leaving it waiting; results are read as soon as any
worker sends one; on any error the workers are killed, never waited on. Workers also die with their
parent (Linux `PR_SET_PDEATHSIG`), so none is left behind as an orphan.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import math
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from iqa_cli.data.resize import DRAFT_GAP, ResizePolicy
from iqa_cli.envvars import max_pixels
from iqa_cli.errors import DataError


def _too_large(width: int, height: int) -> str | None:
    limit = max_pixels()
    if width * height > limit:
        return (
            f"image is {width}x{height} ({width * height / 1e6:.0f} MP), over the {limit / 1e6:g} MP limit "
            "(set IQA_MAX_PIXELS to raise it)"
        )
    return None


# The image files iqa reads from a folder (`iqa predict DIR`, a folder pool, enhanced images).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# Decoded images allowed in flight between the workers and the writer (bytes, all workers together).
INFLIGHT_BYTES = 512 * 2**20
# Most images per task: small enough that progress moves and memory stays bounded.
MAX_CHUNK = 16

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = (5, 6, 7, 8)  # orientations that swap width and height
# The transposition that shows an image stored with EXIF orientation k upright (as ImageOps.exif_transpose).
_ORIENT_OPS = {
    2: (Image.Transpose.FLIP_LEFT_RIGHT,),
    3: (Image.Transpose.ROTATE_180,),
    4: (Image.Transpose.FLIP_TOP_BOTTOM,),
    5: (Image.Transpose.TRANSPOSE,),
    6: (Image.Transpose.ROTATE_270,),
    7: (Image.Transpose.TRANSVERSE,),
    8: (Image.Transpose.ROTATE_90,),
}


@dataclass(frozen=True)
class ImageHeader:
    """What the header says: the size as displayed (after EXIF orientation) and the orientation tag."""

    width: int
    height: int
    orientation: int  # EXIF orientation 1..8 (1 = as stored)
    format: str  # Pillow's format name: 'JPEG', 'PNG', 'BMP', ...
    # Frames of a multi-image file (a multi-page TIFF, an animated PNG/WebP/GIF); only the first is read.
    # An MPO (a JPEG with a depth map or a preview after its picture) counts as 1: its first is the photo.
    frames: int = 1
    transparent: bool = False  # some pixels are not opaque: their alpha is dropped, their stored colours kept


@dataclass(frozen=True)
class DecodeFailure:
    """An image that could not be read; `error()` turns it into the one-line DataError."""

    path: str
    message: str

    def error(self) -> DataError:
        return DataError(f"{self.message} (use --skip-bad to skip unreadable images)", path=self.path)


@dataclass(frozen=True)
class DecodeJob:
    """One image to decode: its file, the orientation from its header (None: read from the file), and
    the stored (w, h) or None."""

    path: str
    # None reads the EXIF orientation from the file itself. A default of 1 ("upright") made `iqa predict`
    # score EXIF-rotated photos sideways while `iqa prepare`, which passes its header's value, turned them.
    orientation: int | None = None
    size: tuple[int, int] | None = None  # None keeps the original size
    # With no size: let the JPEG decoder reduce (DCT scaling, aspect kept) while both sides stay at
    # least DRAFT_GAP x this (w, h); the result is not resized further (`iqa predict`).
    reduce_to: tuple[int, int] | None = None
    # With no size: a cache's resize policy ('short:768', '512x384'), which sizes the image from its own
    # (oriented) size as `iqa prepare` stores it, but never squashes it (`ResizePolicy.file_size`; `iqa
    # predict` of a model trained on such a cache).
    policy: ResizePolicy | None = None


# --- single images (run inside the workers) --------------------------------------------------------


def _orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block must not make the image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


# Read errors that say nothing of the file: the process or the machine ran short (memory, open files), or
# the storage failed under it (an I/O error, an NFS handle gone stale, a timeout). Taken for an unreadable
# image, `--skip-bad` would drop good images from a dataset, the largest first under memory pressure, and
# the cache would hold fewer images than the dataset with nothing but a count to say so.
_NOT_THE_IMAGE = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.ENOBUFS}
)


def not_the_image(exc: BaseException) -> bool:
    """Whether a failure to read an image is the machine's or the storage's, not the file's: such an error
    stops the work (with or without `--skip-bad`) instead of counting the image as unreadable."""
    return isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno in _NOT_THE_IMAGE)


def raise_if_not_the_image(exc: BaseException, path: str | os.PathLike[str]) -> None:
    """Raise `exc` again, naming `path`, when `not_the_image(exc)`."""
    if isinstance(exc, MemoryError):
        raise MemoryError(f"out of memory while reading {path}") from exc
    if not_the_image(exc):
        assert isinstance(exc, OSError)
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def _failure(path: str | os.PathLike[str], exc: BaseException) -> DecodeFailure:
    """The unreadable image `exc` says `path` is; an error of the machine's, not the file's, is raised again."""
    raise_if_not_the_image(exc, path)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return DecodeFailure(str(path), "image file not found")
    if isinstance(exc, UnidentifiedImageError):
        return DecodeFailure(str(path), "not a readable image (unknown or damaged format)")
    if "MP limit" in text or isinstance(exc, AmbiguousScale):
        return DecodeFailure(str(path), text)
    if "truncated" in text.lower():
        return DecodeFailure(str(path), f"image data is truncated or damaged (Pillow: {text})")
    return DecodeFailure(str(path), f"cannot decode image ({type(exc).__name__}: {text})")


_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _transparent(im: Image.Image) -> bool:
    """Whether any pixel of the first frame is less than opaque. Decodes only images that can hold
    transparency (an alpha band, or a palette or grey image with a transparent value): IQA datasets have
    none, so their headers stay header-only."""
    if im.mode not in _ALPHA_MODES and "transparency" not in im.info:
        return False
    alpha = (im if im.mode in _ALPHA_MODES else im.convert("RGBA")).getchannel("A")
    return bool(np.asarray(alpha).min() < 255)


def read_header(path: str | os.PathLike[str]) -> ImageHeader | DecodeFailure:
    """Size, orientation and format from the file header; pixels are not decoded (but for images that
    can hold transparency, see `_transparent`)."""
    Image.MAX_IMAGE_PIXELS = None  # our own limit (`max_pixels`) speaks instead of Pillow's warning
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = _orientation(im)
            fmt = im.format or "?"
            frames = 1 if fmt == "MPO" else int(getattr(im, "n_frames", 1) or 1)
            too_large = _too_large(width, height)
            transparent = False if too_large or width < 1 or height < 1 else _transparent(im)
    except Exception as exc:  # Pillow raises many types for damaged files; all mean "unreadable"
        return _failure(path, exc)
    if width < 1 or height < 1:
        return DecodeFailure(str(path), f"image has an empty size {width}x{height}")
    if too_large:
        return DecodeFailure(str(path), too_large)
    if orientation in _TRANSPOSED:
        width, height = height, width
    return ImageHeader(width, height, orientation, fmt, frames, transparent)


def content_notes(headers: Sequence[tuple[str, ImageHeader]]) -> list[str]:
    """What decoding leaves out of some images, one line each (none when nothing is): every frame but
    the first, and transparency. `headers` pairs each image's name with its header."""
    notes = []
    several = [(name, h.frames) for name, h in headers if h.frames > 1]
    if several:
        name, frames = several[0]
        notes.append(
            f"{len(several)} image(s) hold several frames (a multi-page TIFF, an animated image; e.g. {name}: "
            f"{frames}): only the first frame is read"
        )
    transparent = [name for name, h in headers if h.transparent]
    if transparent:
        notes.append(
            f"{len(transparent)} image(s) have transparent pixels (e.g. {transparent[0]}): their alpha is dropped "
            "and the colours stored under it are read, as OpenCV's imread and Pillow's convert('RGB') read them; "
            "flatten them onto a background first if that is not the image you mean"
        )
    return notes


class AmbiguousScale(DataError):
    """A 32-bit image whose values are not 8-bit grey levels: no conversion would be safe to guess."""


def to_rgb8(im: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB, the way files are decoded: 16-bit images are scaled onto 0-255
    (Pillow's own `convert("RGB")` saturates them at 255); 32-bit ones are taken only when their values
    are 0-255 grey levels (`AmbiguousScale` otherwise)."""
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG"):
        grey = np.asarray(im).astype(np.float64) / 257.0  # 16-bit -> 8-bit, full range onto full range
        return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("I", "F"):
        # 32-bit values are used as 8-bit grey levels only when they are that: other ranges (16-bit
        # data, floats in [0, 1]) would be clipped into a white or black image without a word.
        values = np.asarray(im, dtype=np.float64)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        unit_floats = im.mode == "F" and hi <= 1.0 and not np.array_equal(values, np.rint(values))
        if lo < 0 or hi > 255 or unit_floats:
            kind = "float" if im.mode == "F" else "integer"
            raise AmbiguousScale(
                f"a 32-bit {kind} image with values {lo:g} to {hi:g}: its scale is ambiguous (0-255, 16-bit or "
                "0-1?); save it as 8-bit or 16-bit"
            )
        return Image.fromarray(np.rint(values).astype(np.uint8)).convert("RGB")
    return im.convert("RGB")  # L, P, 1, RGBA, LA, CMYK, YCbCr, ...: Pillow's standard conversions


def _open_reduced(im: Image.Image, size: tuple[int, int] | None, orientation: int) -> None:
    """Ask the JPEG decoder for a DCT-reduced decode no smaller than DRAFT_GAP x the final size."""
    if size is None or im.format not in ("JPEG", "MPO"):
        return
    width, height = size
    if orientation in _TRANSPOSED:  # the stored frame is transposed relative to the final image
        width, height = height, width
    im.draft(None, (math.ceil(width * DRAFT_GAP), math.ceil(height * DRAFT_GAP)))


def decode_image(
    path: str | os.PathLike[str],
    size: tuple[int, int] | None = None,
    *,
    orientation: int | None = None,
    draft: bool = True,
    reduce_to: tuple[int, int] | None = None,
    policy: ResizePolicy | None = None,
) -> np.ndarray:
    """Decode one image to uint8 H x W x 3 RGB, EXIF-oriented, resized to `size` = (w, h) if given.

    Without `size`, a resize `policy` sizes the image from its own oriented size, as a cache of that
    policy stores it; without either, `reduce_to` = (w, h) lets a JPEG decode at a reduced DCT scale
    that keeps both sides at least DRAFT_GAP x these (aspect kept, no further resize). Raises the
    underlying Pillow/OS error; `decode_job` wraps failures for the parallel path. `draft=False`
    disables decode-time JPEG reduction (for comparisons).
    """
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # truncated data is an error, never silently grey
    Image.MAX_IMAGE_PIXELS = None  # our own limit below, checked before any pixel is decoded
    with Image.open(path) as im:
        too_large = _too_large(*im.size)
        if too_large:
            raise ValueError(too_large)
        if orientation is None:
            orientation = _orientation(im)
        if size is None and policy is not None:
            width, height = im.size[::-1] if orientation in _TRANSPOSED else im.size
            size = policy.file_size(width, height)
        if draft:
            _open_reduced(im, size if size is not None else reduce_to, orientation)
        im.load()
        rgb = to_rgb8(im)
        for op in _ORIENT_OPS.get(orientation, ()):
            rgb = rgb.transpose(op)
        if size is not None and rgb.size != tuple(size):
            rgb = rgb.resize((int(size[0]), int(size[1])), Image.Resampling.BICUBIC)
        return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


_DIGEST_CHUNK = 1 << 20


def file_digest(path: str | os.PathLike[str]) -> int:
    """The first 64 bits of a file's SHA-256, as an unsigned integer: the same for byte-identical image
    files (copies, links, one file under two names), whatever their names or the cache's size policy."""
    # Read chunk by chunk and decoded from the path afterwards (the page cache serves it): faster than
    # decoding one in-memory copy of the file (measured: benchmarks/bench_digest.py).
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_DIGEST_CHUNK), b""):
            sha.update(chunk)
    return int.from_bytes(sha.digest()[:8], "little")


def decode_job(job: DecodeJob) -> np.ndarray | DecodeFailure:
    """`decode_image` for one job, with failures returned as values."""
    try:
        array = decode_image(
            job.path, job.size, orientation=job.orientation, reduce_to=job.reduce_to, policy=job.policy
        )
    except Exception as exc:  # any decoder error means this file is unusable (but see `not_the_image`)
        return _failure(job.path, exc)
    if array.ndim != 3 or array.shape[2] != 3:
        return DecodeFailure(job.path, f"decoded to an unexpected shape {array.shape}")
    if job.size is not None and (array.shape[1], array.shape[0]) != tuple(job.size):
        return DecodeFailure(job.path, f"decoded to {array.shape[1]}x{array.shape[0]}, expected {job.size}")
    return array


def decode_job_with_digest(job: DecodeJob) -> tuple[np.ndarray, int] | DecodeFailure:
    """`decode_job` and the file's `file_digest`."""
    try:
        before = _identity(job.path)
        digest = file_digest(job.path)
    except Exception as exc:  # a missing or unreadable file, as `decode_job` reports it
        return _failure(job.path, exc)
    result = decode_job(job)
    if isinstance(result, DecodeFailure):
        return result
    # The file is read twice (hashed, then decoded from its path): one replaced or still being written
    # in between (a copy or an unzip that has not finished) would pair one version's digest with the
    # other's pixels, and copy detection would miss it.
    try:
        changed = _identity(job.path) != before
    except OSError as exc:
        return _failure(job.path, exc)
    if changed:
        return DecodeFailure(job.path, "changed while it was being read (is a copy or an unzip still writing it?)")
    return result, digest


def _identity(path: str | os.PathLike[str]) -> tuple[int, int, int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def _headers_chunk(paths: list[str]) -> list[ImageHeader | DecodeFailure]:
    return [read_header(p) for p in paths]


def _decode_chunk(jobs: list[DecodeJob]) -> list[np.ndarray | DecodeFailure]:
    return [decode_job(j) for j in jobs]


def _decode_digest_chunk(jobs: list[DecodeJob]) -> list[tuple[np.ndarray, int] | DecodeFailure]:
    return [decode_job_with_digest(j) for j in jobs]


# --- the worker pool ---------------------------------------------------------------------------------


def default_workers() -> int:
    """All cores this process may use (its affinity, SLURM's share and a container's CPU quota)."""
    from iqa_cli.threads import available_cores

    return available_cores()


_PR_SET_PDEATHSIG = 1


def _worker_signals() -> None:
    # Ctrl-C is handled once, in the main process, which then tears the pool down. SIGTERM must kill a
    # worker at once: a forked worker inherits the CLI's raise-on-SIGTERM handler, and a worker that
    # catches it keeps running.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):  # die with the parent, even when it is killed with SIGKILL
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _context() -> Any:
    # fork starts workers in ~0.1 s, but forking a process that runs threads (a progress bar, a
    # training loop) can deadlock the child; then forkserver (or spawn) starts clean processes.
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


class WorkerDied(DataError):
    """A worker process ended without returning its task (killed by a signal, out of memory)."""


_DIED = (
    "a worker process died without finishing its images (killed, or out of memory: try fewer workers "
    "with -j, or a smaller --size)"
)


def _worker_main(conn: Any) -> None:
    """A worker: run (func, args) messages from its own pipe and send back ('ok'|'err', value)."""
    _worker_signals()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        func, args = message
        try:
            reply: tuple[str, Any] = ("ok", func(*args))
        except Exception as exc:  # returned to the caller, which raises it there
            reply = ("err", exc)
        try:
            conn.send(reply)
        except Exception as exc:  # an unpicklable result or error: say so instead of dying silently
            conn.send(("err", DataError(f"a worker could not return its result ({type(exc).__name__}: {exc})")))


@dataclass(eq=False)
class _Worker:
    process: Any
    conn: Any


class _Task:
    """One submitted call: `get()` waits for its result (a dead worker raises `WorkerDied`)."""

    def __init__(self, pool: ProcessWorkers, task_id: int) -> None:
        self.pool, self.task_id = pool, task_id

    def ready(self) -> bool:
        return self.task_id in self.pool._done

    def get(self) -> Any:
        return self.pool._result(self.task_id)


class ProcessWorkers:
    """Worker processes with the small `apply_async(func, args).get()` interface the decoders use.

    Each worker has a pipe of its own, whose worker end only that worker holds: when a worker dies,
    even halfway through sending a result, reading its pipe ends (EOF) instead of waiting forever, and
    the pool reports `WorkerDied`. Results are read in this thread as soon as any worker sends one, so
    no worker stays blocked on a full pipe while the caller waits for another. Tearing down kills the
    workers and waits for nothing they hold."""

    def __init__(self, count: int) -> None:
        context = _context()
        self._workers: list[_Worker] = []
        self._queue: deque[tuple[int, Callable[..., Any], tuple[Any, ...]]] = deque()
        self._idle: list[_Worker] = []
        self._running: dict[_Worker, int] = {}
        self._done: dict[int, tuple[str, Any]] = {}
        self._next_id = 0
        self._broken = False
        try:
            for _ in range(count):
                parent_end, child_end = context.Pipe(duplex=True)
                process = context.Process(target=_worker_main, args=(child_end,), daemon=True)
                process.start()
                child_end.close()  # only the worker holds its end: its death closes the pipe
                worker = _Worker(process, parent_end)
                self._workers.append(worker)
                self._idle.append(worker)
        except BaseException:
            self.kill()
            raise

    def apply_async(self, func: Callable[..., Any], args: tuple[Any, ...]) -> _Task:
        task_id = self._next_id
        self._next_id += 1
        self._queue.append((task_id, func, tuple(args)))
        self._dispatch()
        return _Task(self, task_id)

    def _dispatch(self) -> None:
        while self._queue and self._idle and not self._broken:
            worker = self._idle.pop()
            task_id, func, args = self._queue.popleft()
            try:
                worker.conn.send((func, args))
            except (OSError, EOFError):
                self._broken = True
                return
            self._running[worker] = task_id

    def _collect(self) -> None:
        """Wait until a running worker answers or dies; store what it sent."""
        from multiprocessing.connection import wait

        waitables: dict[Any, _Worker] = {}
        for worker in self._running:
            waitables[worker.conn] = worker
            waitables[worker.process.sentinel] = worker
        for ready in wait(list(waitables)):
            worker = waitables[ready]
            if worker not in self._running:
                continue  # its pipe and its sentinel were both ready
            try:
                if ready is not worker.conn and not worker.conn.poll():
                    raise EOFError  # the process ended and sent nothing
                reply = worker.conn.recv()
            except (EOFError, OSError):
                self._broken = True
                continue
            self._done[self._running.pop(worker)] = reply
            self._idle.append(worker)

    def _result(self, task_id: int) -> Any:
        while task_id not in self._done:
            if self._broken or not self._running:
                raise WorkerDied(_DIED)
            self._collect()
            self._dispatch()
        status, value = self._done.pop(task_id)
        if status == "err":
            raise value
        return value

    def close(self) -> None:
        """Normal end: each worker is asked to stop, and killed if it does not within a few seconds."""
        for worker in self._workers:
            with contextlib.suppress(Exception):
                worker.conn.send(None)
        for worker in self._workers:
            worker.process.join(timeout=5)
        self.kill()

    def kill(self) -> None:
        """Stop now: the workers are killed (nothing they hold is needed) and their pipes closed."""
        for worker in self._workers:
            if worker.process.is_alive():
                with contextlib.suppress(Exception):
                    worker.process.kill()
        for worker in self._workers:
            with contextlib.suppress(Exception):
                worker.process.join(timeout=5)
            with contextlib.suppress(Exception):
                worker.conn.close()
        self._broken = True


@dataclass
class Workers:
    """Where decoding runs: a process pool of `count` workers, or this process (`pool` None)."""

    pool: ProcessWorkers | None
    count: int


IN_PROCESS = Workers(None, 1)


@contextlib.contextmanager
def worker_pool(workers: int | None) -> Iterator[Workers]:
    """A pool of `workers` processes (default: all cores); `workers <= 1` works in this process.
    On any exception (a bad image, Ctrl-C, SIGTERM) the workers are killed before it propagates."""
    count = default_workers() if workers is None else int(workers)
    if count <= 1:
        yield IN_PROCESS
        return
    pool = ProcessWorkers(count)
    try:
        yield Workers(pool, count)
    except BaseException:
        pool.kill()
        raise
    pool.close()


def _chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _ordered(
    pool: Any, func: Callable[[list[Any]], list[Any]], chunks: Iterable[list[Any]], window: int
) -> Iterator[Any]:
    """Run `func` on each chunk in the pool, at most `window` chunks in flight, results in input order."""
    if pool is None:
        for chunk in chunks:
            yield from func(chunk)
        return
    source = iter(chunks)
    pending = deque(pool.apply_async(func, (chunk,)) for chunk in islice(source, max(1, window)))
    while pending:
        results = pending.popleft().get()
        following = next(source, None)
        if following is not None:
            pending.append(pool.apply_async(func, (following,)))
        yield from results


def read_headers(
    paths: Sequence[str | os.PathLike[str]], *, workers: Workers = IN_PROCESS
) -> Iterator[ImageHeader | DecodeFailure]:
    """Headers of `paths` in input order (parallel when `workers` comes from `worker_pool`)."""
    names = [str(p) for p in paths]
    chunk = max(1, min(64, len(names) // (4 * workers.count)))
    yield from _ordered(workers.pool, _headers_chunk, _chunks(names, chunk), 4 * workers.count)


def decode_images(
    jobs: Sequence[DecodeJob],
    *,
    workers: Workers = IN_PROCESS,
    image_bytes: int = 3 * 1024 * 1024,
    inflight_bytes: int = INFLIGHT_BYTES,
) -> Iterator[np.ndarray | DecodeFailure]:
    """Decoded images of `jobs` in input order; about `inflight_bytes` of results at most are held at once.

    `image_bytes` is the largest decoded image (H x W x 3 bytes) expected; it sizes the chunks.
    """
    yield from _decode_ordered(_decode_chunk, jobs, workers, image_bytes, inflight_bytes)


def decode_images_with_digests(
    jobs: Sequence[DecodeJob],
    *,
    workers: Workers = IN_PROCESS,
    image_bytes: int = 3 * 1024 * 1024,
    inflight_bytes: int = INFLIGHT_BYTES,
) -> Iterator[tuple[np.ndarray, int] | DecodeFailure]:
    """`decode_images`, each image with its file's `file_digest` (hashed in the workers just before the
    decode, which then reads the file again from the page cache)."""
    yield from _decode_ordered(_decode_digest_chunk, jobs, workers, image_bytes, inflight_bytes)


def _decode_ordered(
    func: Callable[[list[DecodeJob]], list[Any]],
    jobs: Sequence[DecodeJob],
    workers: Workers,
    image_bytes: int,
    inflight_bytes: int,
) -> Iterator[Any]:
    """`func` over chunks of `jobs` in the pool, results in input order, about `inflight_bytes` in flight."""
    per_worker = max(1, inflight_bytes // (2 * workers.count * max(1, image_bytes)))
    chunk = max(1, min(MAX_CHUNK, per_worker, math.ceil(len(jobs) / (4 * workers.count))))
    yield from _ordered(workers.pool, func, _chunks(list(jobs), chunk), 2 * workers.count)
