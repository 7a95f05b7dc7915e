"""Shared test set-up: every test gets its own IQA_HOME so nothing touches ~/.cache/iqa."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("iqa_home")
    monkeypatch.setenv("IQA_HOME", str(home))
    monkeypatch.delenv("IQA_OFFLINE", raising=False)
    monkeypatch.delenv("IQA_WEIGHTS_MIRROR", raising=False)
    yield home


@pytest.fixture(autouse=True, scope="session")
def _threads():
    # CI has 2 cores; keep torch from oversubscribing them when tests run worker processes.
    torch.set_num_threads(2)
