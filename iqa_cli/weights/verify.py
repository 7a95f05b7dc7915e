"""`iqa weights verify`: re-hash stored files, or identify any checkpoint file by its SHA-256."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from iqa_cli.weights.registry import find_known, known_weights
from iqa_cli.weights.store import VerifyResult, WeightStore, sha256_file


def verify_stored(name: str, store: WeightStore, on_chunk: Callable[[int], None] | None = None) -> VerifyResult:
    """Check a stored file against the hash recorded when it was stored and, for unconverted files
    stored under a known name, against the registry's hash as well."""
    result = store.verify(name, on_chunk)
    entry, known = store.get(name), find_known(name)
    if result.ok and entry is not None and known is not None and not entry.extra.get("converted"):
        if not known.digest_matches(result.actual or ""):
            return replace(result, ok=False, reason=f"not the registry's file for '{name}' ({known.verification})")
        pinned = store.pins().get(name)
        if not known.sha256 and pinned is not None and pinned != result.actual:
            return replace(result, ok=False, reason=f"not the file pinned at its first verified download ({pinned})")
    return result


def verify_all(store: WeightStore, on_chunk: Callable[[int], None] | None = None) -> list[VerifyResult]:
    return [verify_stored(e.name, store, on_chunk) for e in store.entries()]


def identify_file(path: str | Path, store: WeightStore) -> dict[str, Any]:
    """Hash any file and say which stored or known checkpoints it is."""
    path = Path(path)
    sha = sha256_file(path)
    stored = [e.name for e in store.entries() if e.sha256 == sha]
    known = [k.name for k in known_weights().values() if (k.sha256 or k.sha256_prefix) and k.digest_matches(sha)]
    return {"path": str(path), "sha256": sha, "size": path.stat().st_size, "stored_as": stored, "known_as": known}
