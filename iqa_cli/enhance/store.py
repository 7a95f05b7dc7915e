"""The enhanced-image file beside a cache, and the paired (I, E) view of a cache that IEIT reads.

`<cache stem>.enhanced.h5` next to the cache (`livew.h5` -> `livew.enhanced.h5`), HDF5:

- ``images``   uint8 (N, Hmax, Wmax, 3): E of every cache image, in the cache's order and layout
  (same valid (h, w) per image, top-left aligned, zero padded; one image per chunk).
- ``names``    utf-8 (N,): the cache's names (checked on open).
- ``operations`` uint8 (N,): what the built-in enhancement applied (1 brightened, 2 deblurred, 3 both;
  0 for unchanged or external images).
- ``keep_enhanced`` bool (N,), ``confidence_original`` / ``confidence_enhanced`` float32 (N,): the
  selection rule's result and the classifier's max softmax on I and E; absent when the rule was not
  computed (`--no-selection`).
- attributes: ``kind`` ("iqa-enhanced-images"), ``format_version`` (1), ``source_cache`` (its file
  name), ``source_count``, ``source_digest`` (see `cache_digest`), ``enhancement`` (what made E:
  the built-in method's description, or ``external: DIR``), ``selection`` (the rule, or "not
  computed"), ``classifier``, ``kept`` (how many E the rule keeps), ``created``, ``iqa_version``.

Written to a temporary name and renamed when complete (`iqa_cli.atomic.atomic_path`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from iqa_cli.errors import DataError
from iqa_cli.h5files import open_h5

KIND = "iqa-enhanced-images"
FORMAT_VERSION = 1
SUFFIX = ".enhanced.h5"
IMAGES, NAMES, OPERATIONS = "images", "names", "operations"
KEEP, CONF_ORIGINAL, CONF_ENHANCED = "keep_enhanced", "confidence_original", "confidence_enhanced"
DIGEST_SAMPLES = 8  # images whose pixels enter the digest (evenly spaced), besides all names/sizes/scores


def enhanced_path(cache_path: str | Path) -> Path:
    """Where the enhanced images of a cache live: `<stem>.enhanced.h5` in the cache's folder."""
    path = Path(cache_path)
    return path.with_name(path.stem + SUFFIX)


def file_attrs(
    cache_path: Path, cache: Any, *, enhancement: str, selection: str, classifier: str, kept: int
) -> dict[str, Any]:
    """The attributes every enhanced-image file carries (see the module docstring)."""
    from datetime import datetime, timezone

    from iqa_cli.version import __version__

    return {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "source_cache": cache_path.name,
        "source_count": len(cache),
        "source_digest": cache_digest(cache),
        "enhancement": enhancement,
        "selection": selection,
        "classifier": classifier,
        "kept": kept,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "iqa_version": __version__,
    }


def cache_digest(cache: Any) -> str:
    """Fingerprint of a cache's content: names, sizes, scores and the pixels of a few images."""
    digest = hashlib.sha256()
    digest.update("\n".join(str(n) for n in cache.names).encode("utf-8"))
    digest.update(np.ascontiguousarray(cache.sizes, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(cache.scores, dtype=np.float32).tobytes())
    n = len(cache)
    if n:
        picks = np.unique(np.linspace(0, n - 1, min(n, DIGEST_SAMPLES)).round().astype(np.int64))
        digest.update(np.ascontiguousarray(cache.read_images(picks)).tobytes())
    return digest.hexdigest()[:32]


def enhanced_digest(enhanced: EnhancedImages, keep: np.ndarray | None) -> str:
    """Fingerprint of the E a model sees: the pixels of a few enhanced images (evenly spaced, as
    `cache_digest` samples) and `keep`, the selection rule's stored choices. The same when the same E are
    made again; another enhancement (an external tool's output, another classifier's choices) gives another."""
    digest = hashlib.sha256()
    n = len(enhanced)
    if n:
        picks = np.unique(np.linspace(0, n - 1, min(n, DIGEST_SAMPLES)).round().astype(np.int64))
        digest.update(np.ascontiguousarray(enhanced.read_images(picks)).tobytes())
    if keep is not None:
        digest.update(np.packbits(np.asarray(keep, dtype=bool)).tobytes())
    return digest.hexdigest()[:32]


class EnhancedImages:
    """An open enhanced-image file, checked against its cache. Images are read on demand."""

    def __init__(self, path: Path, cache: Any, cache_path: Path) -> None:
        self.path = path
        try:
            self._file = open_h5(path, "r")
        except OSError as exc:
            raise DataError(f"cannot open the enhanced images (damaged file? {exc})", path=path) from None
        try:
            self._check(cache, cache_path)
        except BaseException:
            self.close()
            raise

    def _check(self, cache: Any, cache_path: Path) -> None:
        from iqa_cli.data.cache_read import plain_value

        f = self._file
        self.attrs = {k: plain_value(v) for k, v in f.attrs.items()}
        again = f"make them again with `iqa prepare enhance {cache_path}`"
        if self.attrs.get("kind") != KIND or IMAGES not in f or NAMES not in f:
            raise DataError(f"not an iqa enhanced-image file; {again}", path=self.path)
        if int(self.attrs.get("format_version", 0)) > FORMAT_VERSION:
            raise DataError("enhanced-image file is newer than this iqa reads; upgrade iqa", path=self.path)
        self.images = f[IMAGES]
        n = len(cache)
        if len(self.images) != n:
            raise DataError(f"holds {len(self.images)} enhanced images but the cache has {n}; {again}", path=self.path)
        if tuple(self.images.shape[1:]) != tuple(cache.images.shape[1:]):
            raise DataError(
                f"enhanced images are {tuple(self.images.shape[1:])} but the cache's are "
                f"{tuple(cache.images.shape[1:])}; {again}",
                path=self.path,
            )
        names = [plain_value(x) for x in f[NAMES][()].tolist()]
        for i, (ours, theirs) in enumerate(zip(names, cache.names, strict=True)):
            if ours != theirs:
                raise DataError(
                    f"image {i} is '{ours}' here but '{theirs}' in the cache (another cache's images?); {again}",
                    path=self.path,
                )
        if self.attrs.get("source_digest") != cache_digest(cache):
            raise DataError(f"was made from a different version of the cache (re-prepared since?); {again}",
                            path=self.path)  # fmt: skip
        self.keep = np.asarray(f[KEEP][()], dtype=bool) if KEEP in f else None
        self.operations = np.asarray(f[OPERATIONS][()], dtype=np.uint8) if OPERATIONS in f else None

    def __len__(self) -> int:
        return len(self.images)

    def read_images(self, indices: np.ndarray) -> np.ndarray:
        from iqa_cli.data.cache_read import gather_rows

        return gather_rows(self.images, np.asarray(indices))

    def close(self) -> None:
        handle, self._file = getattr(self, "_file", None), None
        if handle is not None:
            handle.close()


def open_enhanced(cache: Any, cache_path: str | Path) -> EnhancedImages:
    """The enhanced images of `cache` (checked to belong to it), or one line saying how to make them."""
    cache_path = Path(cache_path)
    path = enhanced_path(cache_path)
    if not path.is_file():
        raise DataError(
            f"no enhanced images for this cache (expected {path}); compute them with `iqa prepare enhance "
            f"{cache_path}`, or take your own tool's output with `iqa prepare enhance {cache_path} "
            "--enhanced-root DIR`",
            path=cache_path,
        )
    return EnhancedImages(path, cache, cache_path)


class PairedDataset:
    """A cache whose `read_images` returns (n, H, W, 6): the image and its intermediary E, channel-stacked.

    With `use_selection`, E is replaced by the original wherever the stored rule did not keep it (the
    authors' `X2[~keep] = X[~keep]`). Everything else (sizes, scores, splits, names, ...) is the cache's.
    """

    def __init__(self, cache: Any, enhanced: EnhancedImages, *, use_selection: bool) -> None:
        self._cache, self.enhanced = cache, enhanced
        self.keep = enhanced.keep if use_selection else None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_cache", "enhanced", "keep"):
            raise AttributeError(name)
        return getattr(self._cache, name)

    def __len__(self) -> int:
        return len(self._cache)

    def read_images(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        originals = self._cache.read_images(indices)
        enhanced = self.enhanced.read_images(indices)
        if self.keep is not None:
            drop = ~self.keep[indices]
            enhanced[drop] = originals[drop]
        return np.concatenate([originals, enhanced], axis=-1)

    def close(self) -> None:
        self.enhanced.close()  # the cache itself is closed by whoever opened it
