"""Load our checkpoints and the authors' released ones safely; save ours atomically.

Safety: files are read with `torch.load(weights_only=True)` or safetensors, never by unpickling
arbitrary objects. Format: our checkpoints are safetensors files (or weights-only `.pt`) whose
metadata names the model; the authors' files are DataParallel state dicts (`module.` prefixes),
sometimes wrapped in a dict under `state_dict`/`model`.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iqa_cli.atomic import atomic_path
from iqa_cli.errors import CheckpointError
from iqa_cli.models.registry import StateDict, get_entry

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "params")
MAX_LISTED = 5


def read_state_dict(path: str | Path) -> tuple[StateDict, dict[str, str]]:
    """Read tensors and metadata from a file without running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint file not found", path=path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            tensors: StateDict = {}
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                for key in f.keys():
                    tensors[key] = f.get_tensor(key)
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"not a readable safetensors file ({exc})", path=path) from None
        return tensors, meta
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            "refused: the file needs unpickling of arbitrary Python objects, which could run code; "
            f"only plain tensors are accepted ({str(exc).splitlines()[0][:160]})",
            path=path,
        ) from None
    except Exception as exc:
        raise CheckpointError(f"not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})", path=path) from None
    meta: dict[str, str] = {}
    if isinstance(obj, Mapping) and isinstance(obj.get("iqa_meta"), Mapping):
        meta = {str(k): str(v) for k, v in obj["iqa_meta"].items()}
    return unwrap_state_dict(obj, source=path), meta


def unwrap_state_dict(obj: Any, *, source: str | Path = "<state dict>") -> StateDict:
    """Find the tensor dict inside a checkpoint object and strip DataParallel `module.` prefixes."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict of tensors, found {type(obj).__name__}", path=source)
    if not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
        else:
            raise CheckpointError(
                f"no tensors found (top-level keys: {', '.join(map(str, list(obj)[:MAX_LISTED]))})", path=source
            )
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _mismatch_report(expected: StateDict, given: StateDict) -> str | None:
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    wrong = [
        f"{k} {tuple(given[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if wrong:
        parts.append(f"{len(wrong)} shape mismatches, first: {'; '.join(wrong[:MAX_LISTED])}")
    if missing:
        parts.append(f"{len(missing)} missing tensors, first: {', '.join(missing[:MAX_LISTED])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensors, first: {', '.join(unexpected[:MAX_LISTED])}")
    return "; ".join(parts) or None


def convert_to_ours(model_name: str, state: StateDict, reference: StateDict) -> StateDict:
    """Return `state` in our key names: as-is if it already matches, else via the authors' mapping."""
    if set(state) == set(reference):
        return state
    entry = get_entry(model_name)
    if entry.convert_original is None:
        return state
    converted = entry.convert_original(dict(state))
    # Prefer whichever naming fits better, so error messages talk about the user's real problem.
    if len(set(converted) & set(reference)) >= len(set(state) & set(reference)):
        return converted
    return state


def load_checkpoint(
    model: nn.Module, path_or_state_dict: str | Path | Mapping[str, Any], *, strict: bool = True
) -> nn.Module:
    """Load our checkpoint or the authors' release into `model`, checking every name and shape."""
    source: str | Path
    meta: dict[str, str] = {}
    if isinstance(path_or_state_dict, (str, Path)):
        source = path_or_state_dict
        state, meta = read_state_dict(path_or_state_dict)
    else:
        source = "<state dict>"
        state = unwrap_state_dict(path_or_state_dict)
    name = getattr(model, "iqa_model_name", None)
    saved_for = meta.get("model")
    if name and saved_for and saved_for != name:
        raise CheckpointError(f"checkpoint is for model '{saved_for}', not '{name}'", path=source)
    reference = model.state_dict()
    if name:
        state = convert_to_ours(name, state, reference)
    report = _mismatch_report(reference, state)
    if report and strict:
        what = f"model '{name}'" if name else "this model"
        raise CheckpointError(f"checkpoint does not fit {what}: {report}", path=source)
    fitting = {k: v for k, v in state.items() if k in reference and v.shape == reference[k].shape}
    model.load_state_dict(fitting, strict=strict)
    return model


def save_checkpoint(model: nn.Module | StateDict, path: str | Path, meta: Mapping[str, Any] | None = None) -> Path:
    """Write our checkpoint atomically: safetensors for `.safetensors`, else a weights-only `.pt`."""
    path = Path(path)
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    info = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in (meta or {}).items()}
    if isinstance(model, nn.Module) and getattr(model, "iqa_model_name", None):
        info.setdefault("model", model.iqa_model_name)
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            # safetensors refuses shared storage; clone so tied weights save as separate tensors.
            save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(tmp), metadata=info)
        else:
            torch.save({"state_dict": state, "iqa_meta": info}, str(tmp))
    return path
