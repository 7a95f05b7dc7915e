"""Reads the tensor-level reference fixtures ($IQA_REFERENCE_DIR, else ../shared/reference, else the copy
vendored under tests/reference_data/, so `pytest -m reference` checks the fidelity claim from any checkout).

The vendored copy is data only, one gzip'd JSON per fixture (`{"keys": manifest, "ref": record}`, the
fixture files' content re-serialised compactly); nothing else of the fixtures' origin is in it.

Implements the fixture README's recipes exactly: the CRC32-seeded weight fill over the authors' key
names, the seeded input draw, and tensor comparison against the recorded values/summaries. Nothing
expected is copied into the tests: every number comes from the fixture files.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

import pytest
import torch

DEFAULT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def reference_dir() -> Path:
    return Path(os.environ.get("IQA_REFERENCE_DIR") or DEFAULT_DIR)


VENDORED_DIR = Path(__file__).resolve().parent / "reference_data"


def load_fixture(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return (keys manifest, reference record) for fixture `name`, or skip if absent everywhere."""
    import gzip

    folder = reference_dir()
    keys_file, ref_file = folder / f"{name}_keys.json", folder / f"{name}_ref.json"
    if keys_file.is_file() and ref_file.is_file():
        return json.loads(keys_file.read_text(encoding="utf-8")), json.loads(ref_file.read_text(encoding="utf-8"))
    vendored = VENDORED_DIR / f"{name}.json.gz"
    if vendored.is_file() and not os.environ.get("IQA_REFERENCE_DIR"):
        doc = json.loads(gzip.decompress(vendored.read_bytes()))
        return doc["keys"], doc["ref"]
    pytest.skip(f"reference fixture {name} not found in {folder}")


def filled_state_dict(manifest: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The fixture README's deterministic fill, key by key, in the authors' names."""
    state: dict[str, torch.Tensor] = {}
    for key, shape, dtype in manifest["keys"]:
        shape = tuple(shape)
        g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
        if key.endswith("num_batches_tracked"):
            value = torch.zeros(shape, dtype=torch.int64)
        elif key.endswith("running_var"):
            value = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("weight") and len(shape) == 1:
            value = 1.0 + torch.randn(shape, generator=g) * 0.02
        else:
            value = torch.randn(shape, generator=g, dtype=torch.float32) * 0.02
        if dtype != "float32" and not key.endswith("num_batches_tracked"):
            value = value.to(getattr(torch, dtype))
        state[key] = value
    return state


def make_inputs(ref: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Draw the inputs of `ref['input_recipe']` in order from one seeded generator."""
    recipe = ref["input_recipe"]
    g = torch.Generator().manual_seed(int(recipe["seed"]))
    out: dict[str, torch.Tensor] = {}
    for spec in sorted(recipe["inputs"], key=lambda s: s["draw_order"]):
        x = torch.rand(tuple(spec["shape"]), generator=g)
        mean = torch.tensor(spec["mean"]).view(1, -1, *([1] * (x.dim() - 2)))
        std = torch.tensor(spec["std"]).view(1, -1, *([1] * (x.dim() - 2)))
        out[spec["name"]] = (x - mean) / std
    return out


def find(record: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Entry of `outputs`/`intermediates` whose name starts with `prefix` (names carry descriptions)."""
    hits = [k for k in record if k.startswith(prefix)]
    if len(hits) != 1:
        raise KeyError(f"{prefix!r} matches {hits} in {list(record)}")
    return record[hits[0]]


def assert_matches(actual: torch.Tensor, expected: dict[str, Any], atol: float, label: str = "") -> None:
    """Compare a tensor to a recorded one: every value (or the first 16), plus summary statistics."""
    actual = actual.detach().to(torch.float64).cpu()
    assert list(actual.shape) == list(expected["shape"]), f"{label}: shape {list(actual.shape)} != {expected['shape']}"
    if "values" in expected:
        want = torch.tensor(expected["values"], dtype=torch.float64).reshape(actual.shape)
        err = (actual - want).abs().max().item()
        assert err <= atol, f"{label}: max abs error {err:.3g} > {atol:g}"
    else:
        want = torch.tensor(expected["first16"], dtype=torch.float64)
        err = (actual.flatten()[: want.numel()] - want).abs().max().item()
        assert err <= atol, f"{label}: first16 max abs error {err:.3g} > {atol:g}"
    n = actual.numel()
    # Sums over ~1e6 elements carry float32 accumulation noise; compare them relative to their size.
    assert abs(actual.mean().item() - expected["mean"]) <= atol + 1e-5 * abs(expected["mean"]), f"{label}: mean"
    assert abs(actual.sum().item() - expected["sum"]) <= atol * n + 1e-5 * abs(expected["sum"]) + 1e-3, f"{label}: sum"
    if n > 1:
        assert abs(actual.std().item() - expected["std"]) <= atol + 1e-5 * abs(expected["std"]), f"{label}: std"
    assert abs(actual.min().item() - expected["min"]) <= atol, f"{label}: min"
    assert abs(actual.max().item() - expected["max"]) <= atol, f"{label}: max"
