"""Exclusive use of an output (a cache file, a run folder) by one job at a time.

`hold(path)` locks a hidden file beside `path` (`.<name>.lock`) with `flock`, which the kernel
releases when the process dies, even by SIGKILL. The lock file holds who has it (pid, host, start
time, command line), and is removed when the holder lets go, so a finished job leaves nothing
behind. A second job on the same path fails at once with one line naming the holder, instead of both
writing the same files.

Removing a lock file on release is safe with the usual check: after locking, the holder makes sure
the file it locked is still the one at that path (a releaser may have unlinked it in between), and
starts over if not.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from iqa_cli.atomic import hidden_beside, naming_refused_writes
from iqa_cli.errors import ConfigError, DataError

log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]


# errno of a lock that someone holds (flock: EWOULDBLOCK; fcntl-style locks on some systems: EAGAIN, EACCES).
# Any other failure means the file system's locks do not work.
HELD = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES})


def lock_refused(path: Path, exc: OSError, remedy: str) -> DataError:
    """The one line for a file system that refuses a lock with an error of its own (ENOLCK: NFS without
    its lock daemon), naming the lock file and `remedy`."""
    return DataError(f"cannot lock it ({exc.strerror or exc}): file locks do not work here; {remedy}", path=path)


def lock_path(path: str | Path) -> Path:
    return hidden_beside(Path(path), ".lock")


def _holder_text(fd: int) -> str:
    try:
        raw = os.pread(fd, 4096, 0)
        info = json.loads(raw.decode("utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {info['pid']} on {info['host']}, since {since}: {info['command']}"
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "another process"


def _record() -> bytes:
    return json.dumps(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.time(),
            "command": " ".join(["iqa", *sys.argv[1:]]),
        }
    ).encode("utf-8")


@contextlib.contextmanager
def hold(path: str | Path, what: str = "output") -> Iterator[bool]:
    """Hold `path` for this process while the block runs; fail at once if another job holds it. Yields
    whether a lock is held: False where the file system's locks do not work (see `_unlocked`)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(lock_path(path), os.O_RDWR | os.O_CREAT, 0o644))
    except OSError as exc:  # an unwritable place: say so now, naming the output, before any work
        raise DataError(f"cannot write here ({exc.strerror or exc}): choose a writable place", path=path) from None
    if fcntl is None:  # pragma: no cover - not POSIX: filelock's portable lock, left in place
        from filelock import FileLock, Timeout

        lock = FileLock(str(lock_path(path)), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise ConfigError(f"{what} is in use by another iqa job", path=path) from None
        try:
            yield True
        finally:
            lock.release()
        return
    target = lock_path(path)
    while True:
        fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in HELD:  # no locks on this file system
                os.close(fd)
                yield from _unlocked(path, target, what, exc)
                return
            holder = _holder_text(fd)
            os.close(fd)
            raise ConfigError(f"{what} is in use by another iqa job ({holder})", path=path) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(target).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the file we locked was removed by its last holder: lock the new one
    try:
        with naming_refused_writes(target):  # a full disk names the lock file, the first thing a job writes
            os.ftruncate(fd, 0)
            os.pwrite(fd, _record(), 0)
        yield True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(target)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _unlocked(path: Path, target: Path, what: str, exc: OSError) -> Iterator[bool]:
    """Run the block without a lock where the file system refuses `flock` itself (Lustre mounted without
    it: ENOSYS; some NFS set-ups: ENOLCK). Refusing would make such a place unusable; a second job on the
    same output is then not detected, which the warning says."""
    log.warning(
        f"file locks do not work in {path.parent} ({exc.strerror or exc}): another job writing the {what} {path} "
        "would not be detected"
    )
    try:
        yield False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(target)
