"""`enhance_cache`: compute (or take) the intermediary image E of every cache image, run the selection
rule once, and store both beside the cache (`iqa prepare enhance`, `iqa prepare <dataset> --enhance`).

E comes from the built-in enhancement (`iqa_cli.enhance.ops`, applied to each image as the cache stores
it) or, with `enhanced_root`, from the user's own tool: DIR holds one image per cache image under the
same relative name (`names` in the cache); a different image suffix is accepted (`a/b.jpg` may be
`a/b.png`). Those are decoded as `iqa prepare` decodes (EXIF orientation applied) and resized (bicubic)
to the stored size of their original, so I and E stay pixel-aligned.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iqa_cli.atomic import atomic_path
from iqa_cli.data.decode import IMAGE_SUFFIXES
from iqa_cli.enhance import DEFAULT_CLASSIFIER
from iqa_cli.enhance import store as S
from iqa_cli.enhance.classifier import RULE
from iqa_cli.enhance.ops import BRIGHTENED, DEBLURRED
from iqa_cli.errors import DataError
from iqa_cli.fsnames import name_path, name_text
from iqa_cli.h5files import open_h5
from iqa_cli.progress import NullProgress, Progress
from iqa_cli.stop import raise_if_stopped

log = logging.getLogger(__name__)

CHUNK = 32
_MISSING_SHOWN = 3


@dataclass(frozen=True)
class EnhanceSummary:
    path: Path
    cache: Path
    count: int
    enhancement: str
    brightened: int
    deblurred: int
    selection: bool
    kept: int | None  # enhanced images the rule keeps (None: rule not computed)
    classifier: str | None
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path), "cache": str(self.cache), "seconds": round(self.seconds, 3)}


class ExternalImages:
    """The user's enhanced images under `root`, found by the cache's relative names."""

    def __init__(self, root: Path, names: list[str], originals: np.ndarray | None = None) -> None:
        """`originals`: the cache's file digests (`file_digests`), to tell an original file given as its E."""
        if not root.is_dir():
            raise DataError("--enhanced-root is not a folder", path=root)
        self.root = root
        self._by_stem: dict[str, list[Path]] | None = None
        found = [self._find(name) for name in names]
        missing = [n for n, f in zip(names, found, strict=True) if f is None]
        if missing:
            shown = ", ".join(missing[:_MISSING_SHOWN]) + (" ..." if len(missing) > _MISSING_SHOWN else "")
            raise DataError(
                f"{len(missing)} of {len(names)} cache images have no enhanced image here (same relative name, any "
                f"image suffix): {shown}",
                path=root,
            )
        self.files: list[Path] = [f for f in found if f is not None]
        if originals is not None:
            self._check_not_the_originals(names, np.asarray(originals, dtype=np.uint64))

    def _check_not_the_originals(self, names: list[str], originals: np.ndarray) -> None:
        """An enhanced image that is its original file byte for byte is no enhancement: all of them is a
        slip (--enhanced-root given the dataset's own folder, where every name is found), and IEIT would
        train and test with E = I without a word."""
        from iqa_cli.data.decode import file_digest

        same = [i for i, path in enumerate(self.files) if originals[i] and file_digest(path) == int(originals[i])]
        if not same:
            return
        if len(same) == len(self.files):
            raise DataError(
                f"holds the cache's own image files (all {len(same)}, byte for byte, e.g. '{names[same[0]]}'), not "
                "enhanced ones: IEIT would train and test with E = I; give the folder your enhancement tool wrote",
                path=self.root,
            )
        log.warning(
            f"{self.root}: {len(same)} of {len(self.files)} enhanced images are their original file byte for byte "
            f"(first: '{names[same[0]]}'): E = I for those"
        )

    def _find(self, name: str) -> Path | None:
        exact = self.root / name_path(name)  # cache names are text; the file system's may be another encoding
        if exact.is_file():
            return exact
        if self._by_stem is None:
            self._by_stem = {}
            for path in self.root.rglob("*"):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    key = name_text(path.relative_to(self.root).with_suffix("").as_posix()).lower()
                    self._by_stem.setdefault(key, []).append(path)
        found = self._by_stem.get(Path(name).with_suffix("").as_posix().lower(), [])
        if len(found) > 1:
            raise DataError(f"more than one enhanced image for '{name}': {', '.join(p.name for p in found)}",
                            path=self.root)  # fmt: skip
        return found[0] if found else None

    def read(self, index: int, height: int, width: int) -> np.ndarray:
        """uint8 (height, width, 3): the enhanced image resized to its original's stored size."""
        from iqa_cli.data.decode import DecodeFailure, decode_image, raise_if_not_the_image, read_header

        path = self.files[index]
        header = read_header(path)
        if isinstance(header, DecodeFailure):
            raise DataError(header.message, path=path)
        if height != width and header.height != header.width and (header.height > header.width) != (height > width):
            raise DataError(
                f"enhanced image is {header.width}x{header.height} but its original is stored {width}x{height} "
                "(rotated?)",
                path=path,
            )
        try:
            return decode_image(path, (width, height), orientation=header.orientation)
        except Exception as exc:  # any decoder error means this file is unusable (but see `not_the_image`)
            raise_if_not_the_image(exc, path)
            raise DataError(f"cannot decode the enhanced image ({type(exc).__name__}: {exc})", path=path) from None


def enhance_cache(
    cache_path: str | Path,
    *,
    enhanced_root: str | Path | None = None,
    selection: bool = True,
    classifier: str = DEFAULT_CLASSIFIER,
    device: str = "auto",
    progress: Progress | None = None,
) -> EnhanceSummary:
    """Write `<cache>.enhanced.h5` beside the cache and return what it holds."""
    import h5py
    import torch

    from iqa_cli.data.cache import open_cache
    from iqa_cli.enhance.classifier import build_classifier, classifier_file
    from iqa_cli.enhance.classifier import selection as select
    from iqa_cli.enhance.ops import METHOD, enhance
    from iqa_cli.home import resolve_cache
    from iqa_cli.train.distributed import resolve_device

    progress = progress or NullProgress()
    started = time.monotonic()
    cache_path = resolve_cache(cache_path)
    if enhanced_root is not None and not Path(enhanced_root).expanduser().is_dir():
        raise DataError("--enhanced-root is not a folder", path=enhanced_root)
    torch_device = resolve_device(device)
    model = None
    classifier_path = None
    if selection:  # before any work: a missing classifier fails in one line, at once
        classifier_path = classifier_file(classifier, switch_off="--no-selection")
        model = build_classifier(classifier_path).to(torch_device)
    out = S.enhanced_path(cache_path)
    with open_cache(cache_path) as cache:
        n = len(cache)
        if n == 0:
            raise DataError("the cache holds no images", path=cache_path)
        digests = getattr(cache, "file_digests", None)
        external = ExternalImages(Path(enhanced_root).expanduser(), cache.names, digests) if enhanced_root else None
        operations = np.zeros(n, np.uint8)
        keep = np.ones(n, bool)
        conf_i, conf_e = np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32)
        _, height, width, _ = cache.shape
        with atomic_path(out) as tmp, open_h5(tmp, "w", track_order=True) as f:
            images = f.create_dataset(
                S.IMAGES, shape=(n, height, width, 3), chunks=(1, height, width, 3), dtype=np.uint8, fillvalue=0
            )
            progress.start(f"enhancing {cache_path.name}", n)
            for start in range(0, n, CHUNK):
                chunk = np.arange(start, min(n, start + CHUNK))
                block = cache.read_images(chunk)
                originals, enhanced = [], []
                out_block = np.zeros_like(block)
                for row, index in enumerate(chunk):
                    raise_if_stopped()  # a signal's exception lost in a library must not let the work go on
                    h, w = (int(v) for v in cache.sizes[index])
                    original = torch.from_numpy(np.ascontiguousarray(block[row, :h, :w])).to(torch_device)
                    original = original.permute(2, 0, 1)
                    if external is not None:
                        image = external.read(int(index), h, w)
                        e = torch.from_numpy(image.copy()).to(torch_device).permute(2, 0, 1)  # decoded read-only
                    else:
                        e, operations[index] = enhance(original)
                        image = e.permute(1, 2, 0).cpu().numpy()
                    out_block[row, :h, :w] = image
                    originals.append(original)
                    enhanced.append(e)
                images[start : start + chunk.size] = out_block
                if model is not None:
                    keep[chunk], conf_i[chunk], conf_e[chunk] = select(model, originals, enhanced)
                progress.advance(chunk.size)
            progress.finish()
            f.create_dataset(S.NAMES, data=np.asarray(cache.names, dtype=object), dtype=h5py.string_dtype("utf-8"))
            f.create_dataset(S.OPERATIONS, data=operations)
            if model is not None:
                f.create_dataset(S.KEEP, data=keep)
                f.create_dataset(S.CONF_ORIGINAL, data=conf_i)
                f.create_dataset(S.CONF_ENHANCED, data=conf_e)
            enhancement = f"external: {external.root.resolve()}" if external is not None else METHOD
            attrs = S.file_attrs(
                cache_path,
                cache,
                enhancement=enhancement,
                selection=RULE if model is not None else "not computed (--no-selection)",
                classifier=str(classifier) if model is not None else "",
                kept=int(keep.sum()) if model is not None else -1,
            )
            for key, value in attrs.items():
                f.attrs[key] = value
    return EnhanceSummary(
        path=out,
        cache=cache_path,
        count=n,
        enhancement=enhancement,
        brightened=int(((operations & BRIGHTENED) > 0).sum()),
        deblurred=int(((operations & DEBLURRED) > 0).sum()),
        selection=model is not None,
        kept=int(keep.sum()) if model is not None else None,
        classifier=str(classifier) if model is not None else None,
        seconds=time.monotonic() - started,
    )
