"""Optimizer construction helpers shared by the recipes."""

from __future__ import annotations

from typing import Any


def fused_where_possible(parameters: Any) -> tuple[list[Any], dict[str, Any]]:
    """(parameters as a list, optimizer keyword arguments): `fused=True` when every parameter is a
    CUDA floating tensor, so the update is one kernel instead of one per tensor."""
    params = list(parameters)
    fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    return params, ({"fused": True} if fused else {})
