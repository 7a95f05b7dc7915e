"""Optimisation shared by the esnthere code bases (VT-IQA, IEIT, AL-IQA; methods spec §0.5).

Plain SGD (momentum 0 by default) with weight decay, or AdamW as an option, and the authors' manual
plateau rule (`PhasePlateau`). The recipes' Params all carry the fields read here: `optimizer`,
`momentum`, `weight_decay`, `patience`, `plateau_after`, `lr_factor`, `min_lr`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from iqa_cli.train.optim import fused_where_possible
from iqa_cli.train.schedule import PhasePlateau

if TYPE_CHECKING:
    import torch


def esnthere_optimizer(parameters: Iterable[Any], params: Any, lr: float) -> torch.optim.Optimizer:
    import torch

    parameters, fused = fused_where_possible(parameters)
    if getattr(params, "optimizer", "sgd") == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=params.weight_decay, **fused)
    return torch.optim.SGD(parameters, lr=lr, momentum=params.momentum, weight_decay=params.weight_decay, **fused)


def esnthere_schedule(
    phases: tuple[tuple[int, float], ...], params: Any, *, last_phase_count: int | None = 1
) -> PhasePlateau:
    return PhasePlateau(
        phases,
        patience=params.patience,
        after_epoch=params.plateau_after,
        factor=params.lr_factor,
        min_lr=params.min_lr,
        last_phase_count=last_phase_count,
    )
