"""Opening HDF5 files on file systems where locks fail.

HDF5 locks every file it opens. Where the file system has no working locks (Lustre mounted without
`flock`, some NFS set-ups: "unable to lock file, errno = 38" or "= 524"), every open fails, and a good
cache read as "damaged". iqa never changes a finished file in place (caches and their companions are
written under a temporary name and renamed, and `iqa_cli.locks.hold` keeps a second job off an output),
so there HDF5's own lock guards nothing: such a file is opened again without it, with one warning. A
lock that another program holds (it has the file open for writing: errno 11) is one error naming the
file, never read past.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iqa_cli.errors import DataError
from iqa_cli.locks import HELD

if TYPE_CHECKING:
    import h5py

log = logging.getLogger(__name__)

_ERRNO = re.compile(r"unable to lock file, errno = (\d+)", re.IGNORECASE)
_warned: set[str] = set()  # folders already named in a warning


def lock_failure(exc: BaseException) -> int | None:
    """The errno of HDF5's "unable to lock file" in `exc` (0 where it names none); None for other errors."""
    text = str(exc)
    if "unable to lock file" not in text.lower():
        return None
    found = _ERRNO.search(text)
    return int(found.group(1)) if found else int(getattr(exc, "errno", 0) or 0)


def in_use_error(path: Path) -> DataError:
    return DataError("is open for writing in another program (it holds the HDF5 file lock); close it there", path=path)


def open_h5(path: str | Path, mode: str = "r", **options: Any) -> h5py.File:
    """`h5py.File(path, mode, **options)`, opened without HDF5's lock where the file system's locks
    fail; a lock another program holds raises `in_use_error`. Other errors are h5py's own."""
    import h5py

    try:
        return h5py.File(path, mode, **options)
    except OSError as exc:
        code = lock_failure(exc)
        if code is None:
            raise
        if code in HELD:
            raise in_use_error(Path(path)) from None
        folder = str(Path(path).absolute().parent)
        if folder not in _warned:
            _warned.add(folder)
            log.warning(
                f"file locks do not work in {folder} (errno {code}): its HDF5 files are opened without HDF5's "
                "lock (iqa writes them under a temporary name, so a reader never sees one half-written)"
            )
        return h5py.File(path, mode, locking=False, **options)
