"""Shared test set-up: every test gets its own IQA_HOME so nothing touches ~/.cache/iqa.

A passed test's home and `tmp_path` are removed as soon as it ends (a failed one's are kept to look at):
tiny runs still write checkpoints of full-width backbones, and kept for the whole session they filled
CI's disk part-way through the suite (every later test then errored at its set-up).
"""

from __future__ import annotations

import shutil
from collections.abc import Generator
from pathlib import Path

import pytest
import torch

_PASSED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, object, object]:
    report = yield
    if call.when == "call":
        item.stash[_PASSED] = bool(getattr(report, "passed", False))
    return report


@pytest.fixture(autouse=True)
def _isolated_home(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Generator[Path]:
    home = tmp_path_factory.mktemp("iqa_home")
    monkeypatch.setenv("IQA_HOME", str(home))
    monkeypatch.delenv("IQA_OFFLINE", raising=False)
    monkeypatch.delenv("IQA_WEIGHTS_MIRROR", raising=False)
    yield home
    if request.node.stash.get(_PASSED, False):
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _threads() -> None:
    # CI has 2 cores; keep torch from oversubscribing them when tests run worker processes.
    torch.set_num_threads(2)
