"""Load our checkpoints and the authors' released ones safely; save ours atomically.

Safety: files are read with `torch.load(weights_only=True)` or safetensors, never by unpickling
arbitrary objects. The one addition to torch's weights-only allowlist is numpy's data constructors
(scalars, dtypes, arrays of numbers): the authors' training scripts store figures such as a scipy SRCC
(a numpy float64) beside the weights, and those rebuild data, they run no code.

Format: our checkpoints are safetensors files (or weights-only `.pt`) whose metadata names the model;
the authors' files are DataParallel state dicts (`module.` prefixes), sometimes wrapped in a dict
under `state_dict`/`model`.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iqa_cli.atomic import atomic_path, non_file_kind
from iqa_cli.envvars import MAX_CHECKPOINT_BYTES_ENV, max_checkpoint_bytes
from iqa_cli.errors import CheckpointError
from iqa_cli.jsonio import dumps
from iqa_cli.models.registry import StateDict, get_entry

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "params")
MAX_LISTED = 5


def _sniff(path: Path) -> str:
    """What the file's first bytes say it is: 'zip', 'safetensors', 'pickle', 'empty' or 'other'."""
    with open(path, "rb") as f:
        head = f.read(9)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "zip"  # torch.save's default format (or a TorchScript archive)
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"
    if head[:1] == b"\x80":
        return "pickle"  # pickle protocol >= 2: the legacy torch.save format, or a plain pickle
    return "other"


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
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


def read_metadata(path: str | Path) -> dict[str, str]:
    """The metadata of a checkpoint file; a safetensors file's header alone is read (its tensors are
    checked against their digest when `read_state_dict` loads them), any other file is read whole."""
    path = Path(path)
    if path.is_file() and (path.suffix == ".safetensors" or _sniff(path) == "safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                return dict(f.metadata() or {})
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(f"not a readable safetensors file ({exc})", path=path) from None
    return read_state_dict(path)[1]


def _refusal(exc: Exception) -> str:
    """One line explaining why the weights-only unpickler refused a file."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return (
            f"refused: loading it would import the Python object '{found.group(1)}', and unpickling objects "
            "can run arbitrary code; only plain tensors (a weights-only .pt/.pth or safetensors file) are accepted"
        )
    detail = next((line.strip() for line in text.splitlines() if "Unsupported" in line), text.splitlines()[0])
    return (
        "refused: the safe (weights-only) unpickler cannot read this file, so it may hold Python objects whose "
        f"unpickling could run code; only plain tensors are accepted ({detail[:160]})"
    )


DIGEST_KEY = "content_sha256"  # metadata of our checkpoints: the digest of their tensors


def tensors_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names, dtypes, shapes and bytes, in name order (independent of the
    file format, so a .pt and a safetensors file of the same weights have the same digest)."""
    import hashlib

    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.flatten().view(torch.uint8).numpy().data)  # the buffer itself, not a copy
    return digest.hexdigest()


def check_finite(state: Mapping[str, torch.Tensor], path: str | Path) -> None:
    """CheckpointError naming the file when any floating-point weight is NaN or infinite."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        listed = ", ".join(bad[:MAX_LISTED]) + (f" and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else "")
        raise CheckpointError(f"holds non-finite weights (NaN or infinity) in {listed}: a damaged file", path=path)


def read_state_dict(path: str | Path) -> tuple[StateDict, dict[str, str]]:
    """Read tensors and metadata from a file without running pickled code; a checkpoint written by
    iqa is checked against the digest of its tensors recorded when it was written."""
    state, meta = _read_state_dict(path)
    recorded = meta.get(DIGEST_KEY)
    if recorded and tensors_digest(state) != recorded:
        raise CheckpointError(
            "its tensors do not match the digest iqa recorded when writing it (the file was damaged or edited)",
            path=path,
        )
    return state, meta


TORCHSCRIPT_REFUSAL = (
    "refused: this is a TorchScript archive (serialized code, not just tensors); "
    "convert it to a plain state dict or safetensors file first"
)


def require_checkpoint_file(path: Path) -> None:
    """A CheckpointError unless `path` is a regular file (through links): not there, or a pipe, a socket or
    a device (`/dev/zero` would be read until the memory ran out)."""
    kind = non_file_kind(path)
    if kind == "missing":
        raise CheckpointError("checkpoint file not found", path=path)
    if kind is not None:
        raise CheckpointError("is not a regular file (a pipe, socket or device): expected a checkpoint file", path=path)


def check_unpacked_size(path: str | Path, limit: int | None = None, *, what: str = "a checkpoint") -> None:
    """Refuse a PyTorch zip archive whose members would unpack to more than `limit` bytes, before any
    tensor is made: a 2 MB deflated file can claim 2 GiB of zeros. (torch writes its archives stored,
    uncompressed, so the sizes in the zip directory are the truth.)"""
    import zipfile

    path = Path(path)
    require_checkpoint_file(path)  # a pipe would hang the zip check, and /dev/zero fill the memory
    if limit is None:
        limit = max_checkpoint_bytes()
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"not a readable PyTorch archive ({exc})", path=path) from None
    if any(info.filename.endswith("constants.pkl") for info in infos):
        # Refused here, before torch.load would hand the archive to torch.jit.load (it then refuses too,
        # under weights_only, but only after a warning that it was about to run it).
        raise CheckpointError(TORCHSCRIPT_REFUSAL, path=path)
    total = sum(info.file_size for info in infos)
    if total > limit:
        raise CheckpointError(
            f"would unpack to {total / 2**20:.0f} MiB, more than the {limit / 2**20:.0f} MiB {what} can need "
            f"(a compressed bomb, or the wrong file; {MAX_CHECKPOINT_BYTES_ENV} raises the limit)",
            path=path,
        )


def _numpy_data_globals() -> list[Any]:
    """numpy's scalar, dtype and array reconstructors for `torch.serialization.safe_globals`, under both
    module spellings (numpy 1 pickles `numpy.core.multiarray`, numpy 2 `numpy._core.multiarray`)."""
    import numpy as np
    import numpy.dtypes

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    found: list[Any] = [np.dtype, np.ndarray, *(getattr(numpy.dtypes, name) for name in numpy.dtypes.__all__)]
    for function in (multiarray.scalar, multiarray._reconstruct):
        found += [
            (function, f"{module}.{function.__name__}")
            for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        ]
    return found


def _read_state_dict(path: str | Path) -> tuple[StateDict, dict[str, str]]:
    path = Path(path)
    require_checkpoint_file(path)
    kind = _sniff(path)
    if path.suffix == ".safetensors" or kind == "safetensors":
        return _read_safetensors(path)
    if kind == "empty":
        raise CheckpointError("empty file, not a checkpoint", path=path)
    if kind == "other":
        raise CheckpointError(
            "not a checkpoint: expected a PyTorch file (.pt/.pth/.pth.tar) or a safetensors file", path=path
        )
    check_unpacked_size(path)
    try:
        with torch.serialization.safe_globals(_numpy_data_globals()):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(_refusal(exc), path=path) from None
    except RuntimeError as exc:
        if "TorchScript" in str(exc):
            raise CheckpointError(TORCHSCRIPT_REFUSAL, path=path) from None
        raise CheckpointError(f"not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})", path=path) from None
    except Exception as exc:
        raise CheckpointError(f"not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})", path=path) from None
    return unwrap_state_dict(obj, source=path), _iqa_meta(obj)


def _iqa_meta(obj: Any) -> dict[str, str]:
    """The metadata our weights-only .pt files carry beside the tensors (empty for anyone else's)."""
    if isinstance(obj, Mapping) and isinstance(obj.get("iqa_meta"), Mapping):
        return {str(k): str(v) for k, v in obj["iqa_meta"].items()}
    return {}


def _tensor_dict(obj: Mapping[str, Any], depth: int = 0) -> Mapping[str, Any] | None:
    """The dict of tensors in a checkpoint: under a wrapper key (nested up to 3 deep) first, else `obj`.

    A wrapper wins even when stray tensors sit beside it (e.g. a `best_acc1` tensor next to
    `state_dict` in ImageNet-style .pth.tar files). In a plain state dict every value is a tensor, so
    a dict under one of these keys can only be a wrapper.
    """
    if depth < 3:
        for key in WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                found = _tensor_dict(inner, depth + 1)
                if found is not None:
                    return found
    return obj if any(isinstance(v, torch.Tensor) for v in obj.values()) else None


def unwrap_state_dict(obj: Any, *, source: str | Path = "<state dict>") -> StateDict:
    """Find the tensor dict inside a checkpoint object and strip DataParallel `module.` prefixes."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict of tensors, found {type(obj).__name__}", path=source)
    found = _tensor_dict(obj)
    if found is None:
        raise CheckpointError(
            f"no tensors found (top-level keys: {', '.join(map(str, list(obj)[:MAX_LISTED]))})", path=source
        )
    state = {str(k): v for k, v in found.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def mismatch_report(expected: StateDict, given: StateDict, original: StateDict | None = None) -> str | None:
    """What keeps `given` from loading where `expected` is: shape mismatches, missing and unexpected
    tensors, the first few of each by name. When `given` was converted from the file's own key names
    (`original`), tensors are named as the file names them where they passed through the conversion
    unchanged, so the user can find them in their file; the rest carry our names, and say so."""
    file_name = {id(v): k for k, v in (original or {}).items()}

    def named(key: str, detail: str = "") -> str:
        source = file_name.get(id(given[key])) if key in given else None
        if source is None or source == key:
            return f"{key}{detail}"
        return f"{source}{detail} (iqa's {key})"

    missing = [k for k in expected if k not in given]
    unexpected = [named(k) for k in given if k not in expected]
    wrong = [
        named(k, f" {tuple(given[k].shape)} (expected {tuple(expected[k].shape)})")
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    parts = []
    if wrong:
        parts.append(f"{len(wrong)} shape mismatches, first: {'; '.join(wrong[:MAX_LISTED])}")
    if missing:
        layout = " (iqa's names; the file uses the authors' layout)" if original is not None else ""
        parts.append(f"{len(missing)} missing tensors{layout}, first: {', '.join(missing[:MAX_LISTED])}")
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
    # Prefer whichever naming fits better, so error messages talk about the user's real problem; on a
    # tie the conversion did not help (e.g. another method's checkpoint), so keep the file's own names.
    if len(set(converted) & set(reference)) > len(set(state) & set(reference)):
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
        meta = _iqa_meta(path_or_state_dict)
        state = unwrap_state_dict(path_or_state_dict)
    name = getattr(model, "iqa_model_name", None)
    saved_for = meta.get("model")
    if name and saved_for and saved_for != name:
        raise CheckpointError(f"checkpoint is for model '{saved_for}', not '{name}'", path=source)
    reference = model.state_dict()
    original = state
    if name:
        state = convert_to_ours(name, state, reference)
    report = mismatch_report(reference, state, original if state is not original else None)
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
    # Sorted, so the same weights and metadata always give the same file (and the same SHA-256).
    # Strict JSON (an unmeasured metric is null, not -Infinity), as every other file iqa writes.
    info = {k: (v if isinstance(v, str) else dumps(v, sort_keys=True)) for k, v in sorted((meta or {}).items())}
    info[DIGEST_KEY] = tensors_digest(state)
    name = getattr(model, "iqa_model_name", None) if isinstance(model, nn.Module) else None
    if name:
        info.setdefault("model", name)
    with atomic_path(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            # safetensors refuses shared storage; clone so tied weights save as separate tensors.
            save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(tmp), metadata=info)
        else:
            with open(tmp, "wb") as handle:  # a refused write stays an OSError behind torch's RuntimeError
                torch.save({"state_dict": state, "iqa_meta": info}, handle)
    return path
