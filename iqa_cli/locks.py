"""Exclusive use of an output (a cache file, a run folder) by one job at a time.

`hold(path)` takes a file lock beside `path` (`.<name>.lock`, released by the OS when the process
dies, even by SIGKILL) and records who holds it (`.<name>.lock.holder`: pid, host, start time,
command line). A second job on the same path fails at once with one line naming the holder, instead
of both writing the same files.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from iqa_cli.errors import ConfigError


def lock_paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    return path.parent / f".{path.name}.lock", path.parent / f".{path.name}.lock.holder"


def _holder_text(holder: Path) -> str:
    try:
        info = json.loads(holder.read_text())
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {info['pid']} on {info['host']}, since {since}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (no holder record)"


@contextlib.contextmanager
def hold(path: str | Path, what: str = "output") -> Iterator[None]:
    """Hold `path` for this process while the block runs; fail at once if another job holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file, holder = lock_paths(path)
    lock = FileLock(str(lock_file), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(f"{what} is in use by another iqa job ({_holder_text(holder)})", path=path) from None
    try:
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
            "command": " ".join(["iqa", *sys.argv[1:]]),
        }
        with contextlib.suppress(OSError):
            holder.write_text(json.dumps(record))
        yield
    finally:
        with contextlib.suppress(OSError):
            holder.unlink()
        lock.release()
