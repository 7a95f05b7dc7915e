"""Resumable training state: weights, optimizer, scaler, schedule, RNG streams, position.

Saved with `torch.save` as plain tensors, numbers, strings, lists and dicts, and read back with
`weights_only=True`, so a resumable checkpoint can never run code. RNG states that are not tensors
(Python's `random`, NumPy's global generator) are stored as JSON text.
"""

from __future__ import annotations

import json
import os
import pickle
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqa_cli.atomic import atomic_path
from iqa_cli.errors import CheckpointError
from iqa_cli.jsonio import dumps

FORMAT = 1


def capture_rng() -> dict[str, Any]:
    np_state: Any = np.random.get_state()  # the legacy tuple (name, keys, pos, has_gauss, cached)
    py_state = random.getstate()
    return {
        "python": json.dumps([py_state[0], list(py_state[1]), py_state[2]]),
        "numpy": json.dumps([np_state[0], np_state[1].tolist(), *[float(v) for v in np_state[2:]]]),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = json.loads(state["numpy"])
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_state(path: Path, payload: dict[str, Any]) -> None:
    # Through a Python file: a refused write (a full disk) stays an OSError behind torch's RuntimeError.
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save({"format": FORMAT, **payload}, handle)


def load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError("no resumable checkpoint here (the run never finished an epoch or a save)", path=path)
    state = _load(path, mmap=False)
    if "state_dict" not in state:
        raise CheckpointError("not a resumable iqa training checkpoint", path=path)
    return state


def _load(path: Path, *, mmap: bool) -> dict[str, Any]:
    """A resumable checkpoint's dictionary (`mmap`: its tensors mapped, not read), or a CheckpointError."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"unreadable resumable checkpoint ({type(exc).__name__}: {exc})", path=path) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError("not a resumable iqa training checkpoint", path=path)
    return state


# What a resumable checkpoint must share with the run it is resumed into, besides the run itself.
RESUME_IDENTITY = ("method", "dataset", "split", "split_digest", "model", "tiny")


def resumable_meta(path: Path) -> dict[str, str]:
    """The `iqa_meta` of a resumable checkpoint, read without loading its tensors (memory-mapped)."""
    meta = _load(path, mmap=True).get("iqa_meta")
    return dict(meta) if isinstance(meta, dict) else {}


def same_folder(a: str, b: str) -> bool:
    """Whether two spellings of a folder are one folder: through a symbolic link, or a file system mounted
    at another path on this node (`/home/u` and `/gpfs/home/u`)."""
    if a == b or os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them is gone (a run folder moved since)
        return False


def check_resumed_identity(saved: Mapping[str, Any], ours: Mapping[str, Any], path: Path) -> None:
    """CheckpointError when the checkpoint at `path` (its `iqa_meta`, `saved`) belongs to another run than
    the one resuming it (`ours`). A run is known by the id its `run.json` records, so a run folder moved,
    or reached through a link or another mount, is still its own; checkpoints of runs begun before runs
    had ids are known by their folder."""

    def text(value: Any) -> str:
        return value if isinstance(value, str) else dumps(value)

    if saved.get("run_id") and ours.get("run_id"):
        same, key = text(saved["run_id"]) == text(ours["run_id"]), "run_id"
    elif "run" in saved and "run" in ours:
        same, key = same_folder(text(saved["run"]), text(ours["run"])), "run"
    else:
        same, key = True, ""
    mismatch = None if same else key
    for name in RESUME_IDENTITY:
        if mismatch is None and name in saved and name in ours and text(saved[name]) != text(ours[name]):
            mismatch = name  # older checkpoints lack some keys: only those both record are compared
    if mismatch is not None:
        raise CheckpointError(
            f"belongs to another run ({mismatch} {text(saved[mismatch])!r}, this run: {text(ours[mismatch])!r}); "
            "it cannot be resumed here (move it away to start this split afresh)",
            path=path,
        )
