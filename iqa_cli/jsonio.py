"""Strict JSON for every file and stream iqa writes: NaN and infinities become null.

JSON has no such numbers. Python writes them as `NaN`/`Infinity` by default, which `jq`, browsers and
most other languages' parsers reject, so a run folder's `results.json` or `log.jsonl` with one
unmeasured metric was unreadable outside Python. Readers take null as "not measured".
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def strict(obj: Any) -> Any:
    """`obj` with NaN and infinities as None (NumPy scalars and 0-d arrays or tensors as Python
    numbers), recursively."""
    if isinstance(obj, np.generic) or (getattr(obj, "ndim", None) == 0 and hasattr(obj, "item")):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def dumps(obj: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """One strict JSON document (anything else JSON cannot hold is written as its `str`); `sort_keys`
    makes the same object always give the same text (checkpoint metadata)."""
    return json.dumps(strict(obj), indent=indent, sort_keys=sort_keys, default=str, allow_nan=False)
