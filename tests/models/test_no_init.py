"""Random weight fills skipped while a network is built for loading: which calls, which thread."""

from __future__ import annotations

import threading

import torch
from torch import nn

from iqa_cli.models.no_init import random_fills_skipped, unsaved_buffers


def test_random_fills_give_nan_and_draw_nothing():
    torch.manual_seed(0)
    state = torch.get_rng_state()
    with random_fills_skipped():
        x = torch.zeros(4)
        assert x.uniform_() is x and bool(x.isnan().all())
        assert nn.init.trunc_normal_(torch.zeros(3), std=0.02).isnan().all()
        assert nn.init.kaiming_uniform_(torch.zeros(2, 2), a=5**0.5).isnan().all()
        made = torch.randn(2, 3)
        assert made.shape == (2, 3) and bool(made.isnan().all())
        assert torch.rand((5,), dtype=torch.float64).dtype == torch.float64
        assert torch.equal(torch.zeros(3, dtype=torch.int64).random_(), torch.zeros(3, dtype=torch.int64))
        linear = nn.Linear(3, 2)  # parameters (leaves that require grad) too
        assert linear.weight.shape == (2, 3) and bool(linear.weight.isnan().all())
        # everything else still computes
        assert torch.equal(torch.arange(3.0) * 2, torch.tensor([0.0, 2.0, 4.0]))
        assert torch.equal(nn.init.zeros_(torch.ones(2)), torch.zeros(2))
    assert torch.equal(torch.get_rng_state(), state)  # nothing was drawn
    assert bool(torch.isfinite(torch.zeros(4).uniform_()).all())  # back to normal afterwards


def test_only_the_thread_that_entered_it_skips_fills():
    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with random_fills_skipped():
            entered.set()
            leave.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert entered.wait(10)
        drawn = torch.zeros(64).uniform_()  # this thread draws while the other holds the mode
        assert bool(torch.isfinite(drawn).all()) and bool((drawn != 0).any())
    finally:
        leave.set()
        thread.join()


def test_unsaved_buffers_are_named():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)
            self.register_buffer("kept", torch.zeros(2))
            self.register_buffer("table", torch.zeros(2), persistent=False)

    assert unsaved_buffers(Net()) == ["table"]
    assert unsaved_buffers(nn.Linear(2, 2)) == []
