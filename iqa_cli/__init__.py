"""iqa: blind image quality assessment research toolkit (VT-IQA, IEIT, AL-IQA, VIPNet, SSL-IQA).

Python API (see `iqa_cli.api`): `load(weights) -> Scorer`, `methods()`, `prepare(...)`, `train(...)`,
`evaluate(...)`. Heavy modules (torch) are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iqa_cli.version import __version__

__all__ = ["Scorer", "__version__", "evaluate", "load", "methods", "prepare", "train"]

if TYPE_CHECKING:  # pragma: no cover
    from iqa_cli.api import Scorer, evaluate, load, methods, prepare, train


def __getattr__(name: str) -> Any:
    if name in ("Scorer", "evaluate", "load", "methods", "prepare", "train"):
        from iqa_cli import api

        return getattr(api, name)
    raise AttributeError(f"module 'iqa_cli' has no attribute {name!r}")
