"""Import IEIT's published enhanced images and selection files into `<cache>.enhanced.h5`.

The authors ship, per dataset, an enhanced-image cache (`livew_244_brt_debulr.mat`, or `.npz`:
`X` and `Xtest`, uint8 (n, 3, 244, 244), the brightened-then-deblurred E of their prep cache's
[X; Xtest] rows) and the classifier outputs of their selection rule (`livew_prob_compare.npz`:
`op_train`, `op_train2`, `op_test`, `op_test2`, (n, 1000) softmax of I and of E). Their test scripts
keep E where max(op2) >= max(op) and put I back elsewhere (`test_example_of_livew.py`).

Rows are matched to the cache through the authors' prep order (`authors_splits.esnthere_prep_order`:
KonIQ sorted by name, LIVE Challenge's 1,169 rows, then the seed-0 shuffle), and counts are checked.
Their E is 244 x 244, so the cache must be prepared at that size (`--size 244x244`): E is then
stored exactly, pixel for pixel, in the same file format as the built-in enhancement writes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from iqa_cli.atomic import atomic_path
from iqa_cli.enhance import store as S
from iqa_cli.errors import DataError
from iqa_cli.h5files import open_h5

SIDE = 244
RULE = "authors' files: keep E where max softmax(E) >= max softmax(I) (their op/op2 arrays)"


def _load(path: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError("file not found", path=path)
    if path.suffix.lower() == ".mat":
        from iqa_cli.data.datasets._files import load_mat

        return {k: np.asarray(v) for k, v in load_mat(path, list(keys)).items() if k in keys}
    try:
        with np.load(path, allow_pickle=False) as loaded:
            missing = [k for k in keys if k not in loaded.files]
            if missing:
                raise DataError(f"has no array {missing[0]!r} (found: {', '.join(loaded.files)})", path=path)
            return {k: np.asarray(loaded[k]) for k in keys}
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read it as .npz ({exc})", path=path) from None


# E of a row is that row's image brightened and/or deblurred, or the image itself: their grey levels
# correlate far above this. Another dataset's file of as many images, or rows read in another order,
# correlate near zero.
MIN_MATCH_CORRELATION = 0.5
MATCH_SAMPLES = 32


def _check_rows_match(cache: Any, enhanced: np.ndarray, enhanced_file: Path, cache_path: Path) -> None:
    """Refuse E that do not look like the cache's images at the same rows (sampled evenly)."""
    n = len(enhanced)
    picks = np.unique(np.linspace(0, n - 1, min(n, MATCH_SAMPLES)).round().astype(np.int64))
    originals = np.asarray(cache.read_images(picks))
    correlations = []
    for original, made in zip(originals, enhanced[picks], strict=True):
        a = original.astype(np.float64).mean(axis=-1).ravel()
        b = made.astype(np.float64).mean(axis=-1).ravel()
        if a.std() > 0 and b.std() > 0:
            correlations.append(float(np.corrcoef(a, b)[0, 1]))
    if correlations and float(np.median(correlations)) < MIN_MATCH_CORRELATION:
        raise DataError(
            f"the images of {enhanced_file.name} do not look like this cache's at the same rows (median grey-level "
            f"correlation {float(np.median(correlations)):.2f} over {len(correlations)} sampled rows; an image and "
            f"its enhanced copy correlate above {MIN_MATCH_CORRELATION:g}): another dataset's file, or a cache whose "
            "images are not the authors' prep list (prepare it from the official files, every image kept)",
            path=cache_path,
        )


def import_authors_enhanced(
    cache_path: str | Path, enhanced_file: str | Path, prob_file: str | Path | None = None
) -> dict[str, Any]:
    """Write `<cache>.enhanced.h5` from the authors' files; returns a summary dict."""
    import h5py

    from iqa_cli.data.authors_splits import esnthere_prep_order
    from iqa_cli.data.cache import open_cache
    from iqa_cli.home import resolve_cache

    started = time.monotonic()
    cache_path = resolve_cache(cache_path)
    enhanced_file, out = Path(enhanced_file).expanduser(), S.enhanced_path(cache_path)
    arrays = _load(enhanced_file, ("X", "Xtest"))
    stacked = np.concatenate([arrays["X"], arrays["Xtest"]], axis=0)
    if stacked.ndim != 4 or stacked.shape[1:] != (3, SIDE, SIDE) or stacked.dtype != np.uint8:
        raise DataError(
            f"X/Xtest must be uint8 (n, 3, {SIDE}, {SIDE}) as the authors' caches, got {stacked.dtype} {stacked.shape}",
            path=enhanced_file,
        )
    keep_rows = np.ones(len(stacked), dtype=bool)
    conf_i = conf_e = np.full(len(stacked), np.nan, np.float32)
    if prob_file is not None:
        prob_file = Path(prob_file).expanduser()
        probs = _load(prob_file, ("op_train", "op_train2", "op_test", "op_test2"))
        original = np.concatenate([probs["op_train"], probs["op_test"]], axis=0).max(axis=1)
        enhanced = np.concatenate([probs["op_train2"], probs["op_test2"]], axis=0).max(axis=1)
        if original.shape[0] != len(stacked) or enhanced.shape[0] != len(stacked):
            raise DataError(
                f"has {original.shape[0]} rows, the enhanced file {len(stacked)}: not the same dataset", path=prob_file
            )
        keep_rows = (enhanced - original) >= 0  # they put I back where max(op2) - max(op) < 0
        conf_i, conf_e = original.astype(np.float32), enhanced.astype(np.float32)
    with open_cache(cache_path) as cache:
        n = len(cache)
        if len(stacked) != n:
            raise DataError(
                f"{enhanced_file.name} holds {len(stacked)} images, the cache {n} (the authors' order needs the whole "
                "dataset: LIVE Challenge's 1,169, KonIQ's 10,073, ...)",
                path=cache_path,
            )
        if tuple(cache.shape[1:3]) != (SIDE, SIDE) or (cache.sizes != SIDE).any():
            raise DataError(
                f"the authors' enhanced images are {SIDE}x{SIDE}; prepare the cache at that size "
                f"(`iqa prepare {cache.attrs.get('dataset')} --root DIR --size {SIDE}x{SIDE} --out ...`) to store "
                "them exactly",
                path=cache_path,
            )
        rows = esnthere_prep_order(cache.image_list())  # cache index of each of their rows
        images = np.empty((n, SIDE, SIDE, 3), np.uint8)
        images[rows] = stacked.transpose(0, 2, 3, 1)
        _check_rows_match(cache, images, enhanced_file, cache_path)
        keep = np.empty(n, bool)
        keep[rows] = keep_rows
        ci, ce = np.empty(n, np.float32), np.empty(n, np.float32)
        ci[rows], ce[rows] = conf_i, conf_e
        with atomic_path(out) as tmp, open_h5(tmp, "w", track_order=True) as f:
            f.create_dataset(S.IMAGES, data=images, chunks=(1, SIDE, SIDE, 3))
            f.create_dataset(S.NAMES, data=np.asarray(cache.names, dtype=object), dtype=h5py.string_dtype("utf-8"))
            f.create_dataset(S.OPERATIONS, data=np.zeros(n, np.uint8))
            if prob_file is not None:
                f.create_dataset(S.KEEP, data=keep)
                f.create_dataset(S.CONF_ORIGINAL, data=ci)
                f.create_dataset(S.CONF_ENHANCED, data=ce)
            attrs = S.file_attrs(
                cache_path,
                cache,
                enhancement=f"authors: {enhanced_file.name}",
                selection=RULE if prob_file is not None else "not computed (no selection file)",
                classifier="authors' DeiT-S outputs" if prob_file is not None else "",
                kept=int(keep.sum()) if prob_file is not None else -1,
            )
            for key, value in attrs.items():
                f.attrs[key] = value
    return {
        "path": str(out),
        "cache": str(cache_path),
        "count": n,
        "enhancement": f"authors: {enhanced_file.name}",
        "kept": int(keep.sum()) if prob_file is not None else None,
        "seconds": round(time.monotonic() - started, 3),
    }
