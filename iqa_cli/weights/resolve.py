"""`resolve_weights`: turn a store name or a file path into a checkpoint file, fetching when allowed."""

from __future__ import annotations

from pathlib import Path

from iqa_cli.envvars import OFFLINE_ENV, offline
from iqa_cli.errors import CheckpointError, DownloadError
from iqa_cli.progress import Progress
from iqa_cli.weights.fetch import fetch
from iqa_cli.weights.names import validate_name
from iqa_cli.weights.registry import find_known
from iqa_cli.weights.store import SUFFIXES, WeightStore


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith("~") or Path(text).suffix.lower() in SUFFIXES


def resolve_weights(
    name_or_path: str | Path, *, store: WeightStore | None = None, progress: Progress | None = None
) -> Path:
    """A checkpoint file for `--weights`/`--pretrained`: an existing path, a stored name, or a known
    name that is fetched into the store (unless IQA_OFFLINE=1)."""
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if isinstance(name_or_path, Path) or _looks_like_path(text) or candidate.is_file():
        if not candidate.is_file():
            raise CheckpointError("checkpoint file not found", path=candidate)
        return candidate
    store = store or WeightStore()
    validate_name(text)
    if store.has(text):
        return store.path(text)
    known = find_known(text)
    if known is None:
        raise CheckpointError(
            f"'{text}' is neither a file nor a name in the weights store {store.root} "
            "(see `iqa weights list`; store files with `iqa weights add` or `iqa weights import`)"
        )
    if offline() and known.downloadable:
        raise DownloadError(
            f"offline ({OFFLINE_ENV}=1) and '{text}' ({known.file_name}) is not in the weights store {store.root}"
        )
    fetch(text, store=store, progress=progress)
    return store.path(text)
