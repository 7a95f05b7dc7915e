"""Learning-rate schedules. `PhasePlateau` is the esnthere family's hand-written plateau rule.

The VT-IQA / IEIT / AL-IQA training scripts (methods spec §0.5) assign the learning rate by epoch
("phases"), count evaluations without improvement of the selection metric, and once that count
passes a patience after a given epoch: reload the best checkpoint, multiply the learning rate by a
factor, reset the count; training stops when the learning rate falls below a floor. Reconstructed
order of one epoch end (as in the scripts): update the count (0 on improvement, +1 otherwise) ->
apply the phase starting next epoch (the last phase also sets the count to 1, as VT-IQA's
"after epoch 30: lr=0.03, ct=1") -> plateau check -> floor check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class ScheduleAction:
    reload_best: bool = False
    stop: bool = False
    message: str = ""


class Schedule(Protocol):
    def lr(self) -> float: ...

    def end_epoch(self, epoch: int, improved: bool | None) -> ScheduleAction: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class PhasePlateau:
    """Epoch-indexed LR phases plus the reload-best plateau decay and the stop floor.

    phases: ((first_epoch, lr), ...) sorted by epoch, the first at epoch 0. `improved=None` marks an
    epoch without evaluation (the count does not move).
    """

    def __init__(
        self,
        phases: tuple[tuple[int, float], ...],
        *,
        patience: int,
        after_epoch: int,
        factor: float,
        min_lr: float,
        last_phase_count: int | None = 1,
    ) -> None:
        if not phases or phases[0][0] != 0 or list(phases) != sorted(phases):
            raise ValueError("lr phases must be sorted by epoch and start at epoch 0")
        self.phases = tuple((int(e), float(lr)) for e, lr in phases)
        self.patience, self.after_epoch, self.factor, self.min_lr = patience, after_epoch, factor, min_lr
        self.last_phase_count = last_phase_count  # None: the last phase leaves the count alone (AL-IQA)
        self.current = self.phases[0][1]
        self.count = 0
        self.decays = 0

    def lr(self) -> float:
        return self.current

    def end_epoch(self, epoch: int, improved: bool | None) -> ScheduleAction:
        if improved is not None:
            self.count = 0 if improved else self.count + 1
        messages = []
        for index, (start, lr) in enumerate(self.phases):
            if start == epoch + 1 and start > 0:
                self.current = lr
                if index == len(self.phases) - 1 and self.last_phase_count is not None:
                    self.count = self.last_phase_count
                messages.append(f"lr phase: {lr:g} from epoch {start}")
        reload = False
        if self.count > self.patience and epoch > self.after_epoch:
            self.current *= self.factor
            self.count = 0
            self.decays += 1
            reload = True
            messages.append(f"plateau: best model reloaded, lr -> {self.current:.3g}")
        stop = self.current < self.min_lr
        if stop:
            messages.append(f"lr {self.current:.3g} below {self.min_lr:g}: stopping")
        return ScheduleAction(reload_best=reload or stop, stop=stop, message="; ".join(messages))

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current, "count": self.count, "decays": self.decays}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = float(state["current"])
        self.count = int(state["count"])
        self.decays = int(state["decays"])


class EpochDecay:
    """A learning rate that only depends on the epoch, as torch's epoch-stepped schedulers give it.

    `kind`:
      - "step": lr * gamma ** (epoch // step)                       (StepLR, SSL-IQA: step 2, gamma 0.5)
      - "exponential": lr * gamma ** epoch                          (ExponentialLR, VIPNet: gamma 0.85)
      - "cosine_restarts": SGDR with period `step` epochs growing by `mult` after each restart, from lr
        down to `min_lr` (CosineAnnealingWarmRestarts(T_0=step, T_mult=mult, eta_min=min_lr) stepped
        once per epoch; VIPNet's DPM: 8, 2, 1e-4)
      - "constant": lr
    The model is never reloaded and the run stops only at its epoch cap (or by `stop_after`, an
    early-stopping patience in epochs without improvement, checked at evaluated epochs from
    `stop_from_epoch` on: with `--eval-every N` the epochs between evaluations count too, as the
    authors' "epoch > best + patience" counts them).
    """

    KINDS = ("step", "exponential", "cosine_restarts", "constant")

    def __init__(
        self,
        lr: float,
        kind: str,
        *,
        gamma: float = 1.0,
        step: int = 1,
        mult: int = 1,
        min_lr: float = 0.0,
        stop_after: int | None = None,
        stop_from_epoch: int = 0,
    ) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown schedule kind '{kind}' (expected one of {', '.join(self.KINDS)})")
        if step < 1 or mult < 1:
            raise ValueError("schedule step and mult must be at least 1")
        self.base, self.kind, self.gamma, self.step, self.mult, self.min_lr = lr, kind, gamma, step, mult, min_lr
        self.stop_after, self.stop_from_epoch = stop_after, stop_from_epoch
        self.epoch = 0
        self.count = 0

    def lr_at(self, epoch: int) -> float:
        if self.kind == "step":
            return self.base * self.gamma ** (epoch // self.step)
        if self.kind == "exponential":
            return self.base * self.gamma**epoch
        if self.kind == "cosine_restarts":
            period, start = self.step, 0
            while epoch >= start + period:
                start, period = start + period, period * self.mult
            progress = (epoch - start) / period
            return self.min_lr + (self.base - self.min_lr) * (1 + math.cos(math.pi * progress)) / 2
        return self.base

    def lr(self) -> float:
        return self.lr_at(self.epoch)

    def end_epoch(self, epoch: int, improved: bool | None) -> ScheduleAction:
        self.epoch = epoch + 1
        self.count = 0 if improved else self.count + 1  # epochs since the last improvement
        evaluated = improved is not None  # only an evaluation can tell that nothing improved
        if evaluated and self.stop_after is not None and self.count > self.stop_after and epoch >= self.stop_from_epoch:
            return ScheduleAction(stop=True, message=f"no improvement in {self.count} epochs: stopping")
        return ScheduleAction()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.count = int(state["count"])
