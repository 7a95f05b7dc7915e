"""Where iqa keeps its files: one home folder ($IQA_HOME, default ~/.cache/iqa).

Layout: `data/` holds prepared dataset caches (`<dataset>.h5` or `.npz`), `weights/` the checkpoint
store, `runs/` training runs (or `$IQA_RUNS`). Later commands resolve a bare dataset name (`--data livew`) through here.
"""

from __future__ import annotations

import os
from pathlib import Path

from iqa_cli.errors import ConfigError, DataError

CACHE_SUFFIXES = (".h5", ".hdf5", ".npz")


def home() -> Path:
    # Absolute: runs record their cache's path, which must name the same file from any working folder.
    value = _folder_variable("IQA_HOME")
    path = Path(value or _user_home() / ".cache" / "iqa").expanduser().absolute()
    return _folder(path, "IQA_HOME" if value else "the home folder (unset IQA_HOME)")


def _user_home() -> Path:
    """The user's home folder: `$HOME`, or, where that is empty or blank (a job started with `HOME=`), the
    one the user database gives; Python's own rule made that `/`, and the caches `/.cache/iqa`."""
    value = os.environ.get("HOME")
    if value is not None and value.strip():
        return Path(value)
    import pwd

    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        raise ConfigError("HOME is empty and this user has no home folder; set IQA_HOME to a folder") from None


def _folder_variable(name: str) -> str | None:
    """A folder's environment variable; None when unset or empty. Blanks only (`IQA_HOME= $SCRATCH` in a job
    script) would make a folder named by spaces in the working folder, and every cache "missing" from
    the next job: refused."""
    value = os.environ.get(name)
    if value and not value.strip():
        raise ConfigError(f"{name} holds only blanks; expected a folder (or leave it unset)")
    return value or None


def _folder(path: Path, what: str) -> Path:
    # A file where the folder must be made every command fail on a name it never gave ("--out: ...",
    # "no prepared cache named ..."); say what is wrong once, up front.
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what}: {path} is a file; expected a folder")
    return path


def data_dir() -> Path:
    return home() / "data"


def weights_dir() -> Path:
    return home() / "weights"


RUNS_ENV = "IQA_RUNS"


def runs_dir() -> Path:
    """Training runs: `$IQA_RUNS` when set (e.g. a project folder on a cluster), else `$IQA_HOME/runs`."""
    override = _folder_variable(RUNS_ENV)
    return _folder(Path(override).expanduser().absolute(), RUNS_ENV) if override else home() / "runs"


def default_cache_path(dataset: str, fmt: str = "h5") -> Path:
    return data_dir() / f"{dataset}.{fmt}"


def not_a_cache_file(path: Path) -> str:
    """Why `path`, which is no regular file, cannot be read as a cache."""
    from iqa_cli.atomic import non_file_kind

    what = {"folder": "is a folder", "special": "is a pipe, a device or a socket"}.get(
        str(non_file_kind(path)), "cache file not found"
    )
    return f"{what} (expected a cache file written by `iqa prepare`)"


def resolve_cache(name_or_path: str | Path) -> Path:
    """Turn `livew` or `path/to/livew.h5` into an existing cache file, or raise one clear error."""
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.suffix.lower() in CACHE_SUFFIXES or os.sep in text or "/" in text:
        if not candidate.is_file():
            raise DataError(not_a_cache_file(candidate), path=candidate)
        return candidate
    names = [text]
    canonical = _canonical_dataset_name(text)  # `iqa prepare livec` writes livew.h5
    if canonical not in names:
        names.append(canonical)
    for name in names:
        found = [data_dir() / f"{name}{suffix}" for suffix in CACHE_SUFFIXES]
        found = [path for path in found if path.is_file()]
        if len(found) > 1:
            listed = ", ".join(p.name for p in found)
            raise DataError(f"'{text}' names more than one cache in {data_dir()} ({listed}); pass the file path")
        if found:
            return found[0]
    from iqa_cli.data.datasets import is_dataset_name

    # A name no parser knows is one's own dataset, prepared with `iqa prepare custom --name NAME`.
    command = f"{text} --root DIR" if is_dataset_name(text) else f"custom --name {text} --root DIR --csv LABELS"
    raise DataError(f"no prepared cache named '{text}' in {data_dir()} (run `iqa prepare {command}` first)")


def _canonical_dataset_name(name: str) -> str:
    from iqa_cli.data.datasets import get_dataset

    try:
        return get_dataset(name).name
    except ConfigError:
        return name
