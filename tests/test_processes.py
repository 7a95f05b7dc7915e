"""Whether a process named by a file still runs: a zombie, a reused pid and another boot are dead."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iqa_cli.atomic import _host, atomic_path
from iqa_cli.processes import boot_id, proc_state, process_alive, this_process

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")


def _zombie() -> subprocess.Popen:
    """A child killed and not reaped: it answers to its pid, as a job killed under a batch script that
    still runs."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child.kill()
    for _ in range(50):
        state = proc_state(child.pid)
        if state is not None and state[0] == "Z":
            break
        time.sleep(0.05)
    return child


def test_a_zombie_another_start_time_or_another_boot_is_dead():
    me = this_process()
    assert me["pid"] == os.getpid() and me["boot_id"] == boot_id()
    assert process_alive(os.getpid(), boot=me["boot_id"], start_ticks=me["start_ticks"])
    assert not process_alive(os.getpid(), start_ticks=me["start_ticks"] + 1)  # the pid, given to another
    assert not process_alive(os.getpid(), boot="another boot")
    child = _zombie()
    try:
        assert not process_alive(child.pid)
    finally:
        child.wait()
    assert not process_alive(child.pid)  # reaped: no such pid


def test_a_zombie_s_partial_file_is_removed_by_the_next_write(tmp_path):
    """A partial file of a job killed but not reaped stayed: its pid still answered to `kill(pid, 0)`."""
    child = _zombie()
    try:
        stale = tmp_path / f".cache.h5.{_host()}.{child.pid}.abcd1234.partial"
        stale.write_bytes(b"x" * 1000)
        with atomic_path(tmp_path / "cache.h5") as tmp:
            tmp.write_bytes(b"new")
        assert not stale.exists()
    finally:
        child.wait()
