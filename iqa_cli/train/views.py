"""Feeding batches: decoded cache images -> a recipe's stored views -> device tensors, prefetched.

The stored views (e.g. VT-IQA's 244 and 768 px resizes) depend only on the image, so when all of
them fit the RAM budget (`preload_gb`) they are computed once, on the training device, and kept in
ordinary host memory; otherwise each batch is read from the cache and converted on the device as it
comes. On a GPU each batch is gathered into one of a few reusable pinned staging buffers and copied
without blocking (pinning the whole store would lock far more memory than it holds: pinned
allocations round up to a power of two). Either way a background thread prepares the next batch's
host data while the current one trains. Preloaded views may instead stay in GPU memory
(`resident`: `auto` when they take at most a quarter of the free GPU memory, `on`, `off`); batches
are then gathered there and the host is out of the loop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import shutil
import socket
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from iqa_cli.progress import NullProgress, Progress
from iqa_cli.stop import raise_if_stopped
from iqa_cli.threads import bulk_threads
from iqa_cli.train.data import DatasetLike, read_images_ordered
from iqa_cli.train.distributed import DistContext
from iqa_cli.train.prefetch import Prefetch
from iqa_cli.train.recipes.base import BaseParams, Recipe, Views

log = logging.getLogger(__name__)

PRELOAD_CHUNK = 32
PREFETCH_DEPTH = 2  # batches prepared ahead by the prefetch thread
SHM_ENV = "IQA_SHM_DIR"  # where DDP ranks of one node share their preloaded views (default /dev/shm)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def shm_dir() -> Path:
    return Path(os.environ.get(SHM_ENV) or "/dev/shm")


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def node_key() -> str:
    """Which node this rank runs on: torchrun's node rank (GROUP_RANK), else the host's name."""
    group = os.environ.get("GROUP_RANK", "").strip()
    return f"node {group}" if group else socket.gethostname()


def local_world() -> int:
    """Ranks on this node (torchrun's LOCAL_WORLD_SIZE; 1 outside torchrun)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def _mapped(path: Path, shape: tuple[int, ...], mode: Literal["w+", "r+"]) -> torch.Tensor:
    """A uint8 tensor over a shared file mapping (`w+` creates the file, `r+` maps an existing one).
    `w+` never opens a file that exists: in a folder other jobs share (/dev/shm of containers run with
    `--ipc=host`), it could be another job's views, which truncating would silently change."""
    if mode == "w+":
        _reserve(path, int(np.prod(shape)))
        mode = "r+"
    array = np.memmap(path, dtype=np.uint8, mode=mode, shape=shape)
    return torch.from_numpy(array)


def _reserve(path: Path, nbytes: int) -> None:
    """Create `path` (never over an existing file) with `nbytes` allocated, not merely sized: a file sized
    with `ftruncate` takes its pages as they are written, and a tmpfs filled meanwhile (another job in a
    shared /dev/shm) then kills the writer with SIGBUS in the middle of the views. A refused reservation is
    an OSError naming the file, and nothing is left."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise OSError(exc.errno, exc.strerror, str(path)) from None
            os.ftruncate(fd, nbytes)  # a file system without fallocate: sized only
        except AttributeError:  # no posix_fallocate on this platform (macOS)
            os.ftruncate(fd, nbytes)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)


# Pinned staging buffers: a slot is rewritten only when the batch after it has been taken, i.e. when
# its own copy has been queued (the queue's batches, the one being staged, and the one being copied).
STAGING_SLOTS = PREFETCH_DEPTH + 2
RESIDENT_MODES = ("auto", "on", "off")
RESIDENT_SHARE = 0.25  # of the free GPU memory that `resident="auto"` lets the views take
AUTO_PRELOAD_SHARE = 0.6  # of the memory available when a run starts, when no budget is given
FALLBACK_PRELOAD_GIB = 16.0  # where the available memory cannot be read (not Linux)


def preload_budget(gib: float | None) -> float:
    """The preload budget in bytes: `gib` GiB, or by default 60 % of what this process may still take
    (MemAvailable, bounded by its cgroup's limit: a SLURM job's `--mem`, not the node's size)."""
    if gib is not None:
        return float(gib) * 2**30
    from iqa_cli.memory import available_memory_bytes

    available = available_memory_bytes()
    return AUTO_PRELOAD_SHARE * available if available is not None else FALLBACK_PRELOAD_GIB * 2**30


def keep_on_device(mode: str, device: torch.device, nbytes: int) -> bool:
    """Whether preloaded views of `nbytes` stay in the training device's memory (see the module doc)."""
    if mode not in RESIDENT_MODES:
        raise ValueError(f"resident must be one of {', '.join(RESIDENT_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    if device.type != "cuda":
        return False  # on the CPU, host memory is the device's
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= RESIDENT_SHARE * free


class PinnedStaging:
    """A ring of reusable page-locked buffers for host-to-GPU copies of batches.

    `stage` writes a batch's tensors into the next slot (waiting only for that slot's previous copy to
    have finished, via its CUDA event) and returns views of it; `sent` records, after the non-blocking
    copies are queued, the event that frees the slot. With `STAGING_SLOTS` slots a slot is rewritten
    only after the batch it held has gone to the GPU. `pin=False` (tests, CPU) keeps the same
    bookkeeping in ordinary memory.
    """

    def __init__(self, slots: int, *, pin: bool = True, event_factory: Callable[[], Any] | None = None) -> None:
        if slots < 2:
            raise ValueError("staging needs at least two slots")
        self.pin = pin
        self.buffers: list[torch.Tensor | None] = [None] * slots
        self.events: list[Any] = [None] * slots
        self.next = 0
        self.allocations = 0  # page-locked allocations made (they are slow: reuse is the point)
        self._event_factory = event_factory or (lambda: torch.cuda.Event())

    def stage(
        self, tensors: dict[str, torch.Tensor], rows: torch.Tensor | None = None
    ) -> tuple[int, dict[str, torch.Tensor]]:
        """Copy `tensors` (or their `rows`, gathered straight into the buffer) into the next slot."""
        slot = self.next
        self.next = (slot + 1) % len(self.buffers)
        if self.events[slot] is not None:
            self.events[slot].synchronize()  # this slot's last copy to the GPU has finished
            self.events[slot] = None
        shapes = {
            name: ((rows.numel(), *t.shape[1:]) if rows is not None else tuple(t.shape)) for name, t in tensors.items()
        }
        sizes = {name: _aligned(int(np.prod(shape)) * tensors[name].element_size()) for name, shape in shapes.items()}
        needed = sum(sizes.values())
        buffer = self.buffers[slot]
        if buffer is None or buffer.numel() < needed:
            buffer = torch.empty(needed, dtype=torch.uint8, pin_memory=self.pin)
            self.buffers[slot] = buffer
            self.allocations += 1
        out, offset = {}, 0
        for name, tensor in tensors.items():
            nbytes = int(np.prod(shapes[name])) * tensor.element_size()
            view = buffer[offset : offset + nbytes].view(tensor.dtype).view(shapes[name])
            if rows is not None:
                torch.index_select(tensor, 0, rows, out=view)
            else:
                view.copy_(tensor)
            out[name] = view
            offset += sizes[name]
        return slot, out

    def sent(self, slot: int) -> None:
        """Mark the slot's copies as queued: it is free once the event recorded now has passed."""
        event = self._event_factory()
        event.record()
        self.events[slot] = event


def _aligned(nbytes: int, to: int = 64) -> int:
    return -(-nbytes // to) * to


class _Staged:
    """A batch in a staging slot: its host views (or padded image batch) and the slot to release."""

    def __init__(self, data: dict[str, torch.Tensor] | torch.Tensor, slot: int) -> None:
        self.data, self.slot = data, slot


class _Rows:
    """A batch of a device-resident store: its rows (and training seed); the gather runs on the device."""

    def __init__(self, rows: torch.Tensor, seed: int | None) -> None:
        self.rows, self.seed = rows, seed


# What the prefetch thread hands over: whole views, a padded image batch, a staged slot or resident rows.
HostBatch = dict[str, torch.Tensor] | torch.Tensor | _Rows | _Staged


def decode_batch(dataset: DatasetLike, indices: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
    """uint8 (n, H, W, 3) padded images as a CPU tensor, and their valid (h, w) sizes."""
    images = read_images_ordered(dataset, indices)
    return torch.from_numpy(np.ascontiguousarray(images)), np.asarray(dataset.sizes)[indices]


def to_image_list(batch: torch.Tensor, sizes: np.ndarray, device: torch.device) -> list[torch.Tensor]:
    """(n, H, W, 3) uint8 host batch -> list of (3, h, w) uint8 device images (padding cut off)."""
    on_device = batch.to(device, non_blocking=True).permute(0, 3, 1, 2)
    return [on_device[i, :, : int(h), : int(w)] for i, (h, w) in enumerate(sizes)]


class ViewStore:
    """Stored views of a set of images, preloaded to RAM or computed per batch."""

    def __init__(
        self,
        dataset: DatasetLike,
        recipe: Recipe[Any],
        params: BaseParams,
        device: torch.device,
        indices: np.ndarray,
        *,
        budget_bytes: float,
        progress: Progress | None = None,
        resident: str = "off",
        dist: DistContext | None = None,
        scoring: bool = False,
    ) -> None:
        self.dataset, self.recipe, self.params, self.device = dataset, recipe, params, device
        self.dist = dist or DistContext()
        # Images that are only scored keep only what `eval_inputs` reads (`Recipe.scoring_views`).
        self.scoring = scoring
        self.shapes = recipe.scoring_view_shapes(params) if scoring else recipe.view_shapes(params)
        per_image = sum(int(np.prod(s)) for s in self.shapes.values())
        self.indices = np.unique(np.asarray(indices, dtype=np.int64))
        self.nbytes = self.indices.size * per_image
        # Every rank takes the same path (a rank alone near a threshold must not flip it for itself).
        self.preloaded = all(self.dist.gather(self.nbytes <= budget_bytes))
        self.resident = self.preloaded and all(self.dist.gather(keep_on_device(resident, device, self.nbytes)))
        self.host: dict[str, torch.Tensor] = {}  # the preloaded views (on the device when resident)
        self.source = "computed"  # or "mapped": another rank on this node computed them (shared memory)
        self.shared = False  # the preloaded views live in one shared-memory copy per node
        self.row = np.full(len(dataset), -1, dtype=np.int64)
        # Pinned staging for host-to-GPU copies (see STAGING_SLOTS).
        self.staging = PinnedStaging(STAGING_SLOTS) if device.type == "cuda" and not self.resident else None
        if self.preloaded:
            self._preload(progress or NullProgress())

    def describe(self) -> str:
        """Which data path this store takes, for the run's log."""
        gib = self.nbytes / 2**30
        if self.resident:
            return f"views of {self.indices.size} images ({gib:.2f} GiB) kept in {self.device} memory"
        if self.preloaded and self.shared:
            return (
                f"views of {self.indices.size} images ({gib:.2f} GiB) preloaded in shared memory, one copy for the "
                f"{local_world()} ranks of this node"
            )
        if self.preloaded:
            return f"views of {self.indices.size} images ({gib:.2f} GiB) preloaded in host memory"
        return f"views of {self.indices.size} images ({gib:.2f} GiB) exceed the preload budget: computed per batch"

    def _preload(self, progress: Progress) -> None:
        where = self.device if self.resident else torch.device("cpu")
        n = self.indices.size
        self.row[self.indices] = np.arange(n)
        if not self.resident and self._share_on_node(progress):
            return
        self.host = {
            name: torch.empty((n, *shape), dtype=torch.uint8, device=where) for name, shape in self.shapes.items()
        }
        self._compute(progress)

    def _share_on_node(self, progress: Progress) -> bool:
        """Under DDP with several ranks on a node: local rank 0 computes the views into files in shared
        memory (`IQA_SHM_DIR`, default /dev/shm) and the node's other ranks map them, so the node holds
        one copy instead of one per rank. The files are unlinked once every rank has mapped them (the
        mappings stay valid), so nothing is left behind. False (each rank its own copy) when there is
        one rank per node or the shared-memory folder has too little room on any node."""
        dist = self.dist
        if not dist.active or local_world() <= 1:
            return False
        folder = shm_dir()
        fits = folder.is_dir() and os.access(folder, os.W_OK) and shutil.disk_usage(folder).free > 1.1 * self.nbytes
        # The leader's pid alone does not name the job: containers sharing one /dev/shm (`--ipc=host`) each
        # have their own process ids, so a random token of the leader's goes into the file names too.
        token = secrets.token_hex(8)
        n = self.indices.size

        def paths_of(leader: int, leader_token: str) -> dict[str, Path]:
            stem = f"iqa-views-{leader}-{leader_token}-{_UNSAFE.sub('_', self.recipe.name)}"
            return {name: folder / f"{stem}-{_UNSAFE.sub('_', name)}.u8" for name in self.shapes}

        reserved: list[Path] = []
        if fits and local_rank() == 0:  # the space itself, before the ranks agree to share it
            try:
                for name, path in paths_of(os.getpid(), token).items():
                    _reserve(path, int(np.prod((n, *self.shapes[name]))))
                    reserved.append(path)
            except OSError as exc:
                reason = exc.strerror or exc
                log.warning(f"shared memory in {folder} refused the views ({reason}): each rank keeps its own copy")
                fits = False
        node = node_key()
        placement = dist.gather((node, local_rank(), os.getpid(), bool(fits), token))
        # One leader (local rank 0) per node, or nobody shares: two nodes that look alike (hostnames repeated
        # by containers, with no torchrun node rank) would write one node's files from two leaders. Every
        # rank decides alike from the same placement, so the collectives below are entered by all or none.
        leaders = Counter(key for key, local, *_ in placement if local == 0)
        one_leader_each = all(leaders[key] == 1 for key, *_ in placement)
        if not one_leader_each and dist.is_main:
            names = ", ".join(sorted(leaders))
            log.warning(f"the ranks' nodes cannot be told apart (nodes named {names}): each rank keeps its own copy")
        if not (one_leader_each and all(entry[3] for entry in placement)):
            for path in reserved:
                path.unlink(missing_ok=True)
            return False
        leader, token = next((pid, token) for key, local, pid, _, token in placement if key == node and local == 0)
        paths = paths_of(leader, token)
        try:
            if local_rank() == 0:
                self.host = {name: _mapped(paths[name], (n, *shape), "r+") for name, shape in self.shapes.items()}
                self._compute(progress)
            dist.barrier()  # the views are written
            if local_rank() != 0:
                self.host = {name: _mapped(paths[name], (n, *shape), "r+") for name, shape in self.shapes.items()}
                self.source = "mapped"
            dist.barrier()  # every rank has mapped them
        finally:
            if local_rank() == 0:
                for path in paths.values():
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
        self.shared = True
        return True

    def _compute(self, progress: Progress) -> None:
        # No prefetch thread runs yet: on the CPU the resizes may use every core of this rank's share.
        bulk = bulk_threads(ranks_on_node=local_world()) if self.device.type == "cpu" else contextlib.nullcontext()
        with bulk:
            self._compute_views(progress)

    def _compute_views(self, progress: Progress) -> None:
        n = self.indices.size
        progress.start("preparing views", n)
        for start in range(0, n, PRELOAD_CHUNK):
            chunk = self.indices[start : start + PRELOAD_CHUNK]
            batch, sizes = decode_batch(self.dataset, chunk)
            views = self.make_views(to_image_list(batch, sizes, self.device))
            for name, tensor in views.items():
                self.host[name][start : start + chunk.size] = tensor if self.resident else tensor.cpu()
            progress.advance(chunk.size)
            if self.scoring:
                # An evaluation (one process) stops here after a signal whose exception a library lost;
                # a training honours its stop request at its next step, in step with its other ranks.
                raise_if_stopped()
        progress.finish()

    def host_batch(self, indices: np.ndarray, seed: int | None = None) -> tuple[HostBatch, np.ndarray | None]:
        """The CPU-side work of one batch (runs in the prefetch thread); `seed`: a training batch's."""
        if self.resident:
            return _Rows(torch.from_numpy(self.row[indices]), seed), None
        if self.preloaded:
            rows = torch.from_numpy(self.row[indices])
            if self.staging is None:
                return self._gather(rows, seed), None
            # Whole views are gathered straight into the pinned slot; cut crops are copied there.
            cut = None if seed is None else self.recipe.cut_train_views(self.host, rows, seed, self.params)
            slot, staged = self.staging.stage(cut) if cut is not None else self.staging.stage(self.host, rows)
            return _Staged(staged, slot), None
        batch, sizes = decode_batch(self.dataset, indices)
        if self.staging is None:
            return batch, sizes
        slot, staged = self.staging.stage({"images": batch})
        return _Staged(staged["images"], slot), sizes

    def _gather(self, rows: torch.Tensor, seed: int | None) -> dict[str, torch.Tensor]:
        """Rows of the preloaded views: a training batch's crops when the recipe cuts them, else whole."""
        cut = None if seed is None else self.recipe.cut_train_views(self.host, rows, seed, self.params)
        return cut if cut is not None else {name: t.index_select(0, rows) for name, t in self.host.items()}

    def device_batch(self, host: HostBatch, sizes: np.ndarray | None) -> Views:
        if isinstance(host, _Rows):  # resident views: gathered (and cut) where they live
            return self._gather(host.rows.to(self.device, non_blocking=True), host.seed)
        if isinstance(host, _Staged):  # non-blocking copies out of a pinned slot, then the slot is freed
            if isinstance(host.data, dict):
                views = {name: t.to(self.device, non_blocking=True) for name, t in host.data.items()}
            else:
                on_device = host.data.to(self.device, non_blocking=True)
                views = None
            assert self.staging is not None
            self.staging.sent(host.slot)
            if views is not None:
                return views
            images = on_device.permute(0, 3, 1, 2)
            assert sizes is not None  # decoded images come with their sizes
            return self.make_views([images[i, :, : int(h), : int(w)] for i, (h, w) in enumerate(sizes)])
        if isinstance(host, dict):
            return {name: t.to(self.device, non_blocking=True) for name, t in host.items()}
        assert sizes is not None
        return self.make_views(to_image_list(host, sizes, self.device))

    def make_views(self, images: list[torch.Tensor]) -> Views:
        """The recipe's stored views of decoded images (or its scoring views, for a scoring store)."""
        if self.scoring:
            return self.recipe.scoring_views(images, self.params)
        return self.recipe.stored_views(images, self.params)

    def batches(self, batches: Sequence[np.ndarray], seeds: Sequence[int] | None = None) -> BatchIterator:
        return BatchIterator(self, batches, seeds)


class BatchIterator:
    """Yields (indices, views on the device); the next batch's host work runs in a thread.

    `seeds` (training): each batch's seed, so a recipe can cut its crops on the host
    (`Recipe.cut_train_views`); without them (evaluation) the full views are sent.
    Use as a context manager (or call `close`) so a loop left early still stops the thread.
    """

    def __init__(
        self,
        store: ViewStore,
        batches: Sequence[np.ndarray],
        seeds: Sequence[int] | None = None,
        depth: int = PREFETCH_DEPTH,
    ) -> None:
        if store.staging is not None and depth + 2 > len(store.staging.buffers):
            raise ValueError(f"prefetch depth {depth} needs {depth + 2} staging slots")
        self.store = store
        self.batches = [np.asarray(b, dtype=np.int64) for b in batches]
        self.seeds: list[int | None] = [None] * len(self.batches) if seeds is None else [int(s) for s in seeds]
        if len(self.seeds) != len(self.batches):
            raise ValueError(f"{len(self.seeds)} seeds for {len(self.batches)} batches")
        self._prefetch = Prefetch(self._host_batches(), depth=depth, name="iqa-prefetch")

    def _host_batches(self) -> Iterator[tuple[np.ndarray, HostBatch, np.ndarray | None]]:
        for indices, seed in zip(self.batches, self.seeds, strict=True):
            host, sizes = self.store.host_batch(indices, seed)
            yield indices, host, sizes

    def __iter__(self) -> Iterator[tuple[np.ndarray, Views]]:
        for indices, host, sizes in self._prefetch:
            yield indices, self.store.device_batch(host, sizes)

    def close(self) -> None:
        self._prefetch.close()

    def __enter__(self) -> BatchIterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
