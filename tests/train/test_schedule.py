"""Learning-rate schedules: the epoch-stepped decays match torch's schedulers; early stopping."""

from __future__ import annotations

import pytest
import torch

from iqa_cli.train.schedule import EpochDecay


def torch_lrs(make, epochs: int, lr: float = 0.05) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=lr)
    scheduler = make(optimizer)
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize(
    "make, ours",
    [
        (
            lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=8, T_mult=2, eta_min=1e-4),
            EpochDecay(0.05, "cosine_restarts", step=8, mult=2, min_lr=1e-4),
        ),
        (lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.5), EpochDecay(0.05, "step", step=2, gamma=0.5)),
        (lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.85), EpochDecay(0.05, "exponential", gamma=0.85)),
    ],
    ids=["cosine-restarts", "step", "exponential"],
)
def test_epoch_decays_match_torch(make, ours):
    expected = torch_lrs(make, 40)
    got = []
    for epoch in range(40):
        got.append(ours.lr())
        assert not ours.end_epoch(epoch, None).stop
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_resumed_schedule_continues_where_it_stopped():
    first = EpochDecay(0.05, "cosine_restarts", step=8, mult=2, min_lr=1e-4)
    for epoch in range(11):
        first.end_epoch(epoch, None)
    second = EpochDecay(0.05, "cosine_restarts", step=8, mult=2, min_lr=1e-4)
    second.load_state_dict(first.state_dict())
    assert second.lr() == first.lr() == first.lr_at(11)


def test_early_stop_after_patience_only_from_the_given_epoch():
    schedule = EpochDecay(0.1, "constant", stop_after=2, stop_from_epoch=5)
    actions = [schedule.end_epoch(epoch, epoch == 0) for epoch in range(8)]
    assert [a.stop for a in actions] == [False] * 5 + [True] * 3  # 3 misses by epoch 3, but not before epoch 5
    assert "no improvement in 5 epochs" in actions[5].message


def test_early_stop_patience_counts_epochs_between_evaluations_too():
    """With `--eval-every 3`, VIPNet's `--patience 10` ("epochs without improvement", the authors' `epoch >
    best + 10`) counted evaluations: the run trained 30 epochs past its best model instead of 10."""
    schedule = EpochDecay(0.1, "constant", stop_after=10, stop_from_epoch=0)
    evaluated = [epoch for epoch in range(40) if (epoch + 1) % 3 == 0]
    stops = [e for e in range(40) if schedule.end_epoch(e, (e == 2) if e in evaluated else None).stop]
    assert stops[0] == 14  # 12 epochs after the best (epoch 2) at the first evaluation past 10, not 32
