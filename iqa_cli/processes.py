"""Whether a process that a file names (a run's record, a partial file's name) still runs on this host.

A pid alone is a weak name: a process killed but not yet reaped by its parent (a zombie) still answers
to it, and the system gives a free pid to another process later (after a reboot, or a long while). On
Linux `/proc/PID/stat` gives a process's state and start time, and the boot id tells boots apart.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text(encoding="ascii").strip() or None
    except OSError:
        return None


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks after boot) from /proc/PID/stat; None where unreadable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
        return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)
    except (OSError, ValueError, IndexError):
        return None


def this_process() -> dict[str, Any]:
    """Who this process is: pid and host, and on Linux the boot and its start time."""
    record: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname()}
    state, boot = proc_state(os.getpid()), boot_id()
    if state is not None and boot is not None:
        record.update(boot_id=boot, start_ticks=state[1])
    return record


def process_alive(pid: int, *, boot: str | None = None, start_ticks: int | None = None) -> bool:
    """Whether the process `pid` of this host still runs. Dead: no such pid, a zombie, or (where known)
    another boot than `boot` or another start time than `start_ticks` (the pid was given to another)."""
    if boot is not None and boot_id() not in (None, boot):
        return False
    state = proc_state(pid)
    if state is not None:
        letter, ticks = state
        return letter not in ("Z", "X") and (start_ticks is None or ticks == start_ticks)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
