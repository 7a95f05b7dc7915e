"""The protocol the esnthere code bases share (VT-IQA, IEIT, AL-IQA; methods spec §0.5), declared once.

Plain SGD (momentum 0 by default) with weight decay, or AdamW as an option, learning-rate phases and
the authors' manual plateau rule (`PhasePlateau`), square resizes the crops are cut from:
`PlateauParams` (all three) and `EsnthereParams` (VT-IQA and IEIT: optimiser choice, one-rate
override, head-only epochs, loss, dropout, crop mode). A method whose protocol differs in a default
restates that field with `protocol_default`, keeping the declaration's help; `check_protocol` checks
what the fields must satisfy together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from iqa_cli.errors import ConfigError
from iqa_cli.train.optim import fused_where_possible
from iqa_cli.train.recipes.base import BaseParams
from iqa_cli.train.schedule import PhasePlateau

if TYPE_CHECKING:
    import torch

Optimizer = Literal["sgd", "adamw"]
Loss = Literal["l1", "mse", "smooth_l1"]
CropMode = Literal["batch", "image"]
Phases = tuple[tuple[int, float], ...]  # (first epoch, learning rate), sorted by epoch


@dataclass
class PlateauParams(BaseParams):
    """Phases and the plateau rule, the start weights and the crops' geometry (VT-IQA's values)."""

    pretrained: str | None = field(
        default="deit_small_patch16_224",
        metadata={"help": "backbone start weights: a weights-store name or file, or none for random init"},
    )
    momentum: float = field(default=0.0, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=1e-3, metadata={"help": "weight decay"})
    lr_phases: Phases = field(
        default=((0, 0.01), (11, 0.001), (21, 0.005), (31, 0.03)),
        metadata={"help": "learning rate by first epoch, e.g. 0:0.01,11:0.001,21:0.005,31:0.03"},
    )
    patience: int = field(default=20, metadata={"help": "plateau: evaluations without improvement before a decay"})
    plateau_after: int = field(default=20, metadata={"help": "plateau rule active only after this epoch"})
    lr_factor: float = field(default=0.3, metadata={"help": "plateau: lr multiplier (after reloading the best model)"})
    min_lr: float = field(
        default=5e-5, metadata={"help": "stop when the learning rate falls below this (at most every phase's lr)"}
    )
    global_source: int = field(default=244, metadata={"help": "side of the square resize the crops are cut from"})
    crop_size: int = field(default=224, metadata={"help": "network input side"})


@dataclass
class EsnthereParams(PlateauParams):
    """VT-IQA's and IEIT's shared training choices on top of the phases (VT-IQA's values)."""

    optimizer: Optimizer = field(default="sgd", metadata={"help": "sgd (protocol) or adamw"})
    lr: float | None = field(
        default=None, metadata={"help": "one starting learning rate instead of lr_phases (plateau rule still on)"}
    )
    freeze_epochs: int = field(default=11, metadata={"help": "epochs at the start that train the head only"})
    loss: Loss = field(default="l1", metadata={"help": "l1, mse or smooth_l1"})
    dropout: float = field(default=0.5, metadata={"help": "dropout before the regression head"})
    crop_mode: CropMode = field(
        default="batch", metadata={"help": "batch (one crop/flip per batch, the protocol) or image (per image)"}
    )


def regression_loss(kind: Loss, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The `--loss` of a score regression: mean L1, MSE or smooth L1 of (B,) predictions in float32."""
    import torch.nn.functional as F

    pred = pred.reshape(-1).float()
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target)
    return F.l1_loss(pred, target)


def check_phases(name: str, phases: Phases | None) -> None:
    """A phase list starts at epoch 0 and is sorted by epoch, each epoch once (None: the method fills it in)."""
    if phases is None:
        return
    starts = [int(start) for start, _ in phases]
    if not phases or starts[0] != 0 or starts != sorted(starts):
        raise ConfigError(f"{name} must start at epoch 0 and be sorted by epoch (e.g. 0:0.01,11:0.001)")
    twice = sorted({start for start in starts if starts.count(start) > 1})
    if twice:  # one of the two rates would be dropped without a word
        rates = ", ".join(f"{lr:g}" for start, lr in phases if start == twice[0])
        raise ConfigError(f"{name}: epoch {twice[0]} is given more than one learning rate ({rates}); give it one")


def check_protocol(params: PlateauParams) -> None:
    """What the shared fields must satisfy together (each value's own range and choices are the config
    layer's checks)."""
    if params.global_source < params.crop_size:
        raise ConfigError(f"global_source ({params.global_source}) is smaller than crop_size ({params.crop_size})")
    check_phases("lr_phases", params.lr_phases)
    lr = getattr(params, "lr", None)
    if lr is not None and not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr}")
    if lr is not None:
        check_min_lr("lr", ((0, lr),), params.min_lr)
    elif params.lr_phases is not None:  # None: the method fills it in, and checks it then
        check_min_lr("lr_phases", params.lr_phases, params.min_lr)


def check_min_lr(name: str, phases: Phases, min_lr: float) -> None:
    """Every phase starts at or above `min_lr`. Below it, the stop rule ends training as that phase starts
    (after the first epoch, for the first phase): a model of a few epochs, kept as the run's result."""
    for start, lr in phases:
        if lr < min_lr:
            what = f"{name} {lr:g} is" if len(phases) == 1 else f"{name} gives {lr:g} from epoch {start},"
            raise ConfigError(f"{what} below min_lr {min_lr:g}, where training stops; lower min_lr or raise that lr")


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
