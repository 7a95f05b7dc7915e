"""Resumable training state: weights, optimizer, scaler, schedule, RNG streams, position.

Saved with `torch.save` as plain tensors, numbers, strings, lists and dicts, and read back with
`weights_only=True`, so a resumable checkpoint can never run code. RNG states that are not tensors
(Python's `random`, NumPy's global generator) are stored as JSON text.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqa_cli.atomic import atomic_path
from iqa_cli.errors import CheckpointError

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
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"unreadable resumable checkpoint ({type(exc).__name__}: {exc})", path=path) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or "state_dict" not in state:
        raise CheckpointError("not a resumable iqa training checkpoint", path=path)
    return state
