"""A stand-in for the torchrun process that started this rank, to tell its OMP_NUM_THREADS=1 from the user's."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def started_by_torchrun(monkeypatch: pytest.MonkeyPatch, *, users: bool) -> Iterator[None]:
    """This process looks like a torchrun rank (TORCHELASTIC_RUN_ID, OMP_NUM_THREADS=1) whose parent has
    OMP_NUM_THREADS=1 in its own environment only when `users` (the user set it, torchrun passed it on)."""
    parent_env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if users:
        parent_env["OMP_NUM_THREADS"] = "1"
    torchrun = subprocess.Popen(["sleep", "60"], env=parent_env)
    try:
        monkeypatch.setattr(os, "getppid", lambda: torchrun.pid)
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        yield
    finally:
        torchrun.kill()
        torchrun.wait()
