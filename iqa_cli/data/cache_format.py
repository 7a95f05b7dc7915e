"""Names and constants of the cache format (version 1), shared by the writer and the reader.

See `iqa_cli.data.cache` for the description of the format.
"""

from __future__ import annotations

from pathlib import Path

from iqa_cli.errors import ConfigError
from iqa_cli.h5files import open_h5

FORMAT_VERSION = 1
FORMATS = ("h5", "npz")

# Per-image arrays, all of length N.
IMAGES = "images"  # uint8 (N, Hmax, Wmax, 3), each image top-left aligned, zero padded
SIZES = "sizes"  # int32 (N, 2): (h, w) of each image's valid region
SCORES = "scores"  # float32 (N,): native scores, unchanged
STD = "std"  # float32 (N,): native score std, NaN where unknown
NAMES = "names"  # utf-8 strings (N,): image paths relative to the dataset root
REF_IDS = "ref_ids"  # int32 (N,): reference image id, -1 where none
PER_IMAGE = (SIZES, SCORES, STD, NAMES, REF_IDS)
# Optional per-image array, written only when the dataset gives it (older caches lack it):
DISTRIBUTIONS = "distributions"  # float32 (N, K): share of ratings per category, lowest first; NaN rows unknown
FLAGS = "flags"  # uint8 (N,): bits of iqa_cli.data.records (TRAINING_IMAGE, ...); absent = all 0
# uint64 (N,): the first 64 bits of each source file's SHA-256 (`decode.file_digest`); equal values are
# byte-identical files. Absent in caches written before it (and in generated sets): copies are unknown.
FILE_DIGESTS = "file_digests"
# One digest per reference file (indexed by `ref_ids`; 0: not known): a distorted-image cache, or a
# full-reference dataset that ships its references.
REFERENCE_DIGESTS = "reference_digests"
# float32 (N,): KonIQ's 0-100 MOS_zscore beside its 1-5 MOS (VIPNet's label), NaN where unknown; written
# only by datasets that give it (absent in caches written before it).
MOS_ZSCORE = "mos_zscore"

SPLITS = "splits"  # group (HDF5) / key prefix (NPZ): splits/<name>/<part>
ATTRS = "attrs"  # NPZ only: the attributes as one JSON string

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"

_SUFFIX_FORMATS = {".h5": "h5", ".hdf5": "h5", ".npz": "npz"}


def resolve_format(fmt: str | None, out: Path | None) -> str:
    """The cache format from `--format` and/or the output suffix (default h5); conflicts are errors."""
    by_suffix = _SUFFIX_FORMATS.get(out.suffix.lower()) if out is not None else None
    if out is not None and by_suffix is None:  # `--out abc` would be a cache no `--data abc` finds by name
        raise ConfigError(f"--out {out}: a cache file's name ends in .h5, .hdf5 or .npz")
    if fmt is None:
        return by_suffix or "h5"
    fmt = fmt.lower().lstrip(".")
    fmt = "h5" if fmt in ("hdf5", "hdf") else fmt
    if fmt not in FORMATS:
        raise ConfigError(f"unknown cache format '{fmt}' (expected h5 or npz)")
    if out is not None and by_suffix is not None and by_suffix != fmt:
        raise ConfigError(f"--format {fmt} does not match the output file name {out} (suffix {out.suffix})")
    return fmt


def check_replaceable(path: Path, option: str = "--out") -> None:
    """An existing `path` is replaced by a new cache only when it is one (or an unreadable one, which is what
    re-preparing mends): `--out ~/results.h5` must not destroy another program's HDF5 file. A pipe or a
    device is never a cache's place."""
    import zipfile

    from iqa_cli.atomic import existing_kind, special_file

    special = special_file(path)
    if special is not None:  # HDF5 seeks in its file (a pipe failed after the work); a cache is read back by name
        raise ConfigError(f"{option}: {path} is {special}; a cache is a regular file, give a file name")
    if not path.is_file():
        return
    with open(path, "rb") as handle:
        head = handle.read(len(HDF5_MAGIC))
    if not head:
        return  # empty: nothing to keep
    if head == HDF5_MAGIC:
        try:
            with open_h5(path, "r") as handle:
                ours = "format_version" in handle.attrs or IMAGES in handle
        except OSError:
            return  # damaged: replacing it is the mend
        kind = "an HDF5 file without a cache's images"
    elif head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                ours = f"{ATTRS}.npy" in archive.namelist() or f"{IMAGES}.npy" in archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return
        kind = "a zip archive without a cache's images (a .pt checkpoint?)"
    else:
        ours, kind = False, existing_kind(path) or "a file"
    if not ours:
        raise ConfigError(
            f"{option}: {path} exists and is not an iqa cache ({kind}); it is not replaced (give another name, or "
            "remove it first)"
        )
