"""Where iqa keeps its files: one home folder ($IQA_HOME, default ~/.cache/iqa).

Layout: `data/` holds prepared dataset caches (`<dataset>.h5` or `.npz`), `weights/` the checkpoint
store, `runs/` training runs. Later commands resolve a bare dataset name (`--data livew`) through here.
"""

from __future__ import annotations

import os
from pathlib import Path

from iqa_cli.errors import DataError

CACHE_SUFFIXES = (".h5", ".hdf5", ".npz")


def home() -> Path:
    return Path(os.environ.get("IQA_HOME") or Path.home() / ".cache" / "iqa").expanduser()


def data_dir() -> Path:
    return home() / "data"


def weights_dir() -> Path:
    return home() / "weights"


def runs_dir() -> Path:
    return home() / "runs"


def default_cache_path(dataset: str, fmt: str = "h5") -> Path:
    return data_dir() / f"{dataset}.{fmt}"


def resolve_cache(name_or_path: str | Path) -> Path:
    """Turn `livew` or `path/to/livew.h5` into an existing cache file, or raise one clear error."""
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.suffix.lower() in CACHE_SUFFIXES or os.sep in text or "/" in text:
        if not candidate.is_file():
            raise DataError("cache file not found (expected a file written by `iqa prepare`)", path=candidate)
        return candidate
    for suffix in CACHE_SUFFIXES:
        path = data_dir() / f"{text}{suffix}"
        if path.is_file():
            return path
    raise DataError(f"no prepared cache named '{text}' in {data_dir()} (run `iqa prepare {text} --root DIR` first)")
