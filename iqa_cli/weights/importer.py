"""Bring checkpoints into the store in our format: `import_checkpoint` (authors' files) and `add_file`.

Import reads the authors' file without running pickled code (`read_state_dict`), maps their key names
onto our model through the model registry, checks every name and shape against a network built on
the meta device (no memory, no weights), and writes a safetensors file whose metadata names the
model and the source file's SHA-256. A checkpoint that needs arbitrary unpickling is refused.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from iqa_cli.errors import CheckpointError, ConfigError
from iqa_cli.models.checkpoint import (
    check_unpacked_size,
    convert_to_ours,
    mismatch_report,
    read_state_dict,
    save_checkpoint,
)
from iqa_cli.models.registry import StateDict, create, get_entry, model_names
from iqa_cli.weights.names import validate_name
from iqa_cli.weights.registry import find_known
from iqa_cli.weights.store import StoredWeights, WeightStore, sha256_file

FORMAT_TAG = "iqa-weights-1"

log = logging.getLogger(__name__)


def _ensure_models_registered() -> None:
    import iqa_cli.models  # noqa: F401  (architecture modules register themselves on import)


def reference_state(method: str) -> StateDict:
    """Names and shapes of our network `method`: built on the meta device, falling back to CPU."""
    _ensure_models_registered()
    get_entry(method)  # a clear error for an unknown method, before any building
    return _build_cheaply(method).state_dict()


def _build_cheaply(name: str) -> torch.nn.Module:
    """The network on the meta device (no memory, no init), or on the CPU where its builder needs real
    tensors (timm's ViTs before 1.0.21 call `.item()` while building). Call `get_entry(name)` first: it
    imports the network's module outside the meta device, where on torch 2.6 a first `import timm` fails."""
    try:
        with torch.device("meta"):
            return create(name)
    except Exception:  # noqa: BLE001 - CPU is the safe fallback
        return create(name)


def model_summaries() -> list[dict[str, Any]]:
    """One row per registered network: name, parameter count, input layout, description."""
    _ensure_models_registered()
    rows = []
    for name in model_names():
        entry = get_entry(name)  # imports the network's module outside the meta device (see _build_cheaply)
        try:
            params: int | None = sum(p.numel() for p in _build_cheaply(name).parameters())
        except Exception:  # noqa: BLE001 - report the network even if it cannot be built here
            params = None
        rows.append({"name": name, "parameters": params, "inputs": entry.inputs, "description": entry.description})
    return rows


def default_import_name(method: str, file: Path) -> str:
    """The registry's name when the file name is a known release of this method, else METHOD-<stem>."""
    from iqa_cli.weights.registry import known_weights

    matches = [k.name for k in known_weights().values() if k.file_name == file.name and k.method == method]
    if len(matches) == 1:
        return matches[0]
    stem = file.name
    for suffix in (".safetensors", ".pth.tar", ".pth", ".pt", ".tar", ".bin", ".ckpt"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    cleaned = re.sub(r"[^A-Za-z0-9_.+-]+", "_", stem).strip("._-") or "checkpoint"
    return validate_name(f"{method}-{cleaned}"[:128].rstrip("."))


def _check_registry_method(name: str, method: str) -> None:
    known = find_known(name)
    if known is not None and known.method and known.method != method:
        raise ConfigError(f"'{name}' is a known checkpoint for method '{known.method}', not '{method}'")


def authors_split_meta(name: str) -> dict[str, str]:
    """For a known released model: the dataset and split it was trained on, as `iqa eval` reads them
    from our checkpoints, so it tests on the authors' test part by default (not on images they trained on),
    the test-time parameters the authors' test script used for it, and the cache size policy whose views
    are the authors' pixels."""
    import json

    from iqa_cli.data.datasets import get_dataset

    known = find_known(name)
    if known is None or not known.dataset:
        return {}
    try:
        dataset = get_dataset(known.dataset).name  # the name our caches carry (koniq10k -> koniq)
    except ConfigError:
        dataset = known.dataset
    # The dataset alone where the split is not public (SSL-IQA's): `iqa eval` then knows that every test part
    # of that dataset, and all of it under --cross, may hold its training images.
    meta = {"dataset": dataset}
    if known.test_split:
        meta["split"] = known.test_split
    if known.selected_on:  # so `iqa eval` says how the released epoch was chosen (the test part: optimistic)
        meta["selected_on"] = known.selected_on
    if known.test_params:
        meta["params"] = json.dumps(known.test_params, sort_keys=True)
    if known.trained_resize:  # so `iqa eval` says when a cache's views are not the authors' pixels
        meta["resize"] = known.trained_resize
    return meta


def _say_unverified_release(name: str, file: Path, release: dict[str, str]) -> None:
    """An authors' release name whose file has no published digest: whatever file is imported under it is
    scored as theirs (on their test part, said to be kept on it), so say that it could not be checked."""
    known = find_known(name)
    if known is None or known.sha256 or known.sha256_prefix or not release:
        return
    trained = f"{release['dataset']} split {release['split']}" if "split" in release else release["dataset"]
    log.warning(
        f"no digest of the authors' '{name}' file is published, so iqa cannot check that {file.name} is it; it is "
        f"stored as their release, trained on {trained} (which `iqa eval` then keeps out of its tests); import a "
        "checkpoint of your own under another --name"
    )


def import_checkpoint(
    method: str,
    file: str | Path,
    name: str | None = None,
    *,
    store: WeightStore | None = None,
    overwrite: bool = False,
) -> StoredWeights:
    """Convert an authors' checkpoint for `method` to our names and store it as safetensors."""
    store = store or WeightStore()
    file = Path(file)
    reference = reference_state(method)
    name = validate_name(name) if name else default_import_name(method, file)
    _check_registry_method(name, method)
    # The tensors this method needs, with room for an optimizer state or an EMA copy beside them:
    # anything larger is refused from the archive's directory, before a byte is inflated.
    needed = sum(t.numel() * t.element_size() for t in reference.values())
    check_unpacked_size(file, 4 * needed + 64 * 2**20, what=f"a '{method}' checkpoint")
    state, _meta = read_state_dict(file)  # refuses anything that needs arbitrary unpickling
    converted = convert_to_ours(method, state, reference)
    report = mismatch_report(reference, converted, state if converted is not state else None)
    if report:
        raise CheckpointError(f"checkpoint does not fit model '{method}': {report}", path=file)
    bad_types = [k for k, v in converted.items() if v.is_floating_point() != reference[k].is_floating_point()]
    if bad_types:
        raise CheckpointError(f"tensor types do not fit model '{method}', first: {', '.join(bad_types[:5])}", path=file)
    # Our format stores every tensor in the dtype of our network (fp16 releases become fp32).
    ordered = {k: converted[k].detach().cpu().to(reference[k].dtype).contiguous() for k in reference}
    source_sha = sha256_file(file)
    release = authors_split_meta(name)
    with store.lock(name):
        store.ensure_free(name, overwrite)
        with store.staging(name) as tmp:
            target = tmp.with_name(tmp.name + ".safetensors")  # the writer picks the format by suffix
            try:
                save_checkpoint(
                    ordered,
                    target,
                    meta={
                        "format": FORMAT_TAG,
                        "model": method,
                        "method": method,
                        "source": file.name,
                        "source_sha256": source_sha,
                        **release,
                    },
                )
                stored = store.commit(
                    name,
                    target,
                    suffix=".safetensors",
                    sha256=sha256_file(target),
                    source=str(file.resolve()),
                    method=method,
                    source_sha256=source_sha,
                    extra={"converted": True},
                )
            finally:
                target.unlink(missing_ok=True)
    _say_unverified_release(name, file, release)  # once stored: a refused import has nothing to say of it
    return stored


def add_file(
    name: str,
    file: str | Path,
    *,
    method: str | None = None,
    store: WeightStore | None = None,
    overwrite: bool = False,
    reference: StateDict | None = None,
) -> StoredWeights:
    """Store a file that needs no conversion (ours, or a backbone's weights) under `name`.

    The file must be readable as plain tensors. If `name` is a known checkpoint with a hash, the
    file must be that checkpoint; if a method is given (or recorded in the file), every tensor must
    fit that model by name and shape: the default network's, or `reference`'s (the network a trained
    checkpoint's own options describe, see `iqa_cli.train.weights.add_checkpoint`).
    """
    store = store or WeightStore()
    file = Path(file)
    validate_name(name)
    known = find_known(name)
    if known is not None and not known.loadable:
        raise CheckpointError(f"'{name}' is refused: {known.note}", path=file)
    state, meta = read_state_dict(file)
    if known is not None and known.kind == "quality-model" and meta.get("run"):
        # A release name says "the authors' model": `iqa eval` would test it as theirs, and anyone sharing
        # the store would take it for theirs.
        raise CheckpointError(
            f"'{name}' names the authors' released {known.method} model ({known.dataset}); this file is a model "
            f"iqa trained (run {meta.get('run')}, on {meta.get('dataset') or '?'}): store it under another name",
            path=file,
        )
    method = method or (known.method if known else None) or meta.get("model") or None
    if method:
        _check_registry_method(name, method)
        reference = reference if reference is not None else reference_state(method)
        converted = convert_to_ours(method, state, reference)
        report = mismatch_report(reference, converted, state if converted is not state else None)
        if report:
            raise CheckpointError(
                f"file does not fit model '{method}' ({report}); authors' checkpoints go through "
                f"`iqa weights import {method} FILE`",
                path=file,
            )
        if converted is not state:
            raise CheckpointError(
                f"file is in the authors' key layout for '{method}'; convert and store it with "
                f"`iqa weights import {method} FILE --name {name}` (add stores files that are already in iqa's names)",
                path=file,
            )

    def expect(sha: str) -> str | None:
        if known is None or known.digest_matches(sha):
            return None
        want = known.sha256 or f"{known.sha256_prefix}..."
        return (
            f"not the file known as '{name}' (sha256 {sha}, expected {want}); "
            "store it under another name if it is a different checkpoint"
        )

    return store.add(name, file, method=method, overwrite=overwrite, expect=expect)
