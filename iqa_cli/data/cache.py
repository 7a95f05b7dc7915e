"""The dataset cache: one file per prepared dataset, HDF5 (default) or NPZ, format version 1.

Contents (N images; the same names in both formats):

- ``images``  uint8 (N, Hmax, Wmax, 3), RGB, after the resize policy (`iqa_cli.data.resize`). When the
  images differ in size after the policy (``none`` on LIVE, ``short:S`` on mixed portrait/landscape),
  each image is stored **top-left aligned and zero-padded** to the largest height and width.
- ``sizes``   int32 (N, 2): the (h, w) of each image's valid region, always present
  (``images[i, :h, :w]`` is image i; equal to (Hmax, Wmax) for every image when nothing is padded).
- ``scores``  float32 (N,): native scores, unchanged (MOS, DMOS, ...; see attrs for their meaning).
- ``std``     float32 (N,): the score's std where the dataset gives one, NaN elsewhere.
- ``names``   utf-8 strings (N,): the image path relative to the dataset root ('/'-separated).
- ``ref_ids`` int32 (N,): reference image id for synthetic datasets, -1 where none.
- ``distributions`` float32 (N, K), optional: each image's share of ratings per category, lowest
  first (KonIQ's c1..c5 normalised), NaN rows where unknown; only written when the dataset gives
  them, so caches without it (every older one) read as ``distributions = None``.
- ``file_digests`` uint64 (N,), optional: the first 64 bits of each source file's SHA-256; equal
  values are byte-identical files, kept on one side of every random split. Caches written before it
  read as ``file_digests = None`` (copies unknown).
- ``reference_digests`` uint64 (R,), optional: per reference id, the digest of its file (0 where it was
  not read): full-reference datasets that ship their references, and distorted-image caches.
- ``mos_zscore`` float32 (N,), optional: KonIQ's 0-100 ``MOS_zscore`` beside its 1-5 MOS (``scores``),
  VIPNet's label; NaN where unknown. Caches without it (older ones, other datasets) read as None.
- splits: ``splits/random_<k>/train`` and ``.../test`` (int64, sorted indices), k = 0..count-1, and
  ``splits/official/train|val|test`` when the dataset has an official split (KonIQ). See
  `iqa_cli.data.splits` for how they are drawn.
- attributes: ``format_version`` (1), ``dataset``, ``title``, ``score_type``, ``native_range`` [lo, hi],
  ``lower_better``, ``resize`` (the policy string), ``resample``, ``exif_orientation``, ``padded``,
  ``count``, ``source_root`` (the absolute --root), ``dataset_root`` (the folder ``names`` are
  relative to; the parser may find the dataset below --root), ``iqa_version``, ``created`` (ISO 8601
  UTC), ``skipped`` (count) and ``skipped_names``, ``reference_disjoint``, ``split_seed``,
  ``split_count``, ``split_test_fraction``, ``identical_files`` (how many images repeat an earlier
  file).

HDF5 layout: the arrays are datasets at the root, attributes are file attributes, splits are the
group ``splits`` (its attributes: seed, count, test_fraction, reference_disjoint, official; each
``random_<k>`` group has its own ``seed``). ``images`` is chunked one image per chunk, so reading any
image is one contiguous read, and uncompressed: decoded photographs barely compress and decompression
would cost CPU on every epoch.

NPZ layout: an uncompressed ZIP64 archive of .npy members with the same names (``images``, ...,
``splits/random_0/train``); the attributes are a JSON document in the member ``attrs``, with the
splits group's attributes under its key ``splits``. ``numpy.load`` reads it; `open_cache` memory-maps
``images`` instead of loading it.

Writing is atomic (a hidden ``.<name>.*.partial`` temp file in the output folder, renamed when
complete) and streams images, so memory does not grow with the dataset.

API
---
``build_cache(spec, root, out, options=CacheOptions(fmt=None, resize=None, workers=None, skip_bad=False,
splits=10, split_seed=0, test_fraction=0.2, ...), *, records=None, progress=None) -> CacheSummary``

``open_cache(path) -> Cache``, with ``len(cache)``, ``cache.images`` (array-like), ``cache.sizes``,
``.scores``, ``.std``, ``.names``, ``.ref_ids``, ``.distributions``, ``.file_digests`` and ``.mos_zscore`` (or None),
``.attrs`` (dict),
``.read_images(indices)`` (uint8 (n, Hmax, Wmax, 3) in the order given; increasing indices are fastest),
``.image(i)`` (cropped to its size), ``.split_names()``, ``.split(name)`` ('random_3', '3' or 'official'
-> {'train', 'test'[, 'val']}), ``.close()`` / context manager. An empty, truncated or foreign file
raises a one-line DataError.

``load_all_images(cache_or_path) -> np.ndarray`` reads every image into memory (small caches).
``describe_cache(cache) -> dict``: counts, shapes, score statistics, splits, attributes (JSON-ready).
"""

from __future__ import annotations

from iqa_cli.data.cache_format import FORMAT_VERSION, FORMATS
from iqa_cli.data.cache_read import Cache, describe_cache, load_all_images, open_cache, split_members
from iqa_cli.data.cache_write import CacheOptions, CacheSummary, build_cache

__all__ = [
    "FORMAT_VERSION",
    "FORMATS",
    "Cache",
    "CacheOptions",
    "CacheSummary",
    "build_cache",
    "describe_cache",
    "load_all_images",
    "open_cache",
    "split_members",
]
