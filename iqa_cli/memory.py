"""How much memory this process may still take: the machine's MemAvailable, bounded by the memory limit
of its cgroup and of every cgroup above it (a SLURM job's `--mem`, a container's limit), and by the
address space its virtual memory limit leaves (`ulimit -v`, set on many login nodes).

A job on a 512 GB node with `--mem=32G` sees about 500 GB of MemAvailable; planning preloads and batch
sizes from that would have the job killed by its limit. Both cgroup versions are read: v2
(`memory.max`, `memory.current`) and v1 (`memory.limit_in_bytes`, `memory.usage_in_bytes`). Inactive
file pages are counted as free, as MemAvailable counts reclaimable cache.
"""

from __future__ import annotations

import os
from pathlib import Path

from iqa_cli.cgroups import cgroup_folders, read_number

MEMINFO = Path("/proc/meminfo")
_NO_LIMIT = 2**60  # cgroup v1 writes "no limit" as the largest page-aligned 64-bit number

# version: (limit file, usage file, memory.stat key of the inactive file pages)
_FILES = {
    2: ("memory.max", "memory.current", "inactive_file"),
    1: ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
}


def available_memory_bytes() -> int | None:
    """Bytes this process may still take (the smaller of MemAvailable and what its cgroups allow), or
    None where neither can be read (not Linux)."""
    found = [v for v in (machine_available(), cgroup_available(), address_space_left()) if v is not None]
    return min(found) if found else None


def address_space_limit() -> int | None:
    """This process's virtual memory limit in bytes (`ulimit -v`, RLIMIT_AS), or None where it has none."""
    try:
        import resource
    except ImportError:  # not a POSIX system
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def address_space_left() -> int | None:
    """Bytes of address space this process may still map under its virtual memory limit, or None where it
    has none (or its mappings cannot be read). Address space is not memory: a library maps far more than
    it touches (torch with its CUDA libraries maps about 3 GiB on import)."""
    limit = address_space_limit()
    if limit is None:
        return None
    try:
        mapped = int(Path("/proc/self/statm").read_text(encoding="utf-8").split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None
    return max(0, limit - mapped)


def address_space_limited() -> str | None:
    """ "virtual memory is limited to X GiB (`ulimit -v`)", or None where no such limit is set."""
    limit = address_space_limit()
    return None if limit is None else f"virtual memory is limited to {limit / 2**30:.1f} GiB (`ulimit -v`)"


def address_space_note() -> str | None:
    """A line for commands that load torch, where a virtual memory limit is set: libraries that meet it
    fail in their own ways, some ending the process without a word from iqa, one waiting forever."""
    limited = address_space_limited()
    if limited is None:
        return None
    return (
        f"{limited}; torch with its CUDA libraries maps about 3 GiB of address space on import, and a library "
        "that meets the limit may fail with an error of its own or end the process without iqa's error line: "
        "raise it (`ulimit -v unlimited`) where allowed"
    )


def machine_available() -> int | None:
    """MemAvailable of this machine in bytes, or None where it cannot be read."""
    try:
        for line in MEMINFO.read_text(encoding="utf-8").splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def cgroup_available() -> int | None:
    """What the tightest memory limit among this process's cgroups and their parents leaves (limit minus
    usage, plus inactive file pages), or None where no cgroup sets a limit."""
    left = [_left_in(folder, version) for version, folder in cgroup_folders("memory")]
    limited = [value for value in left if value is not None]
    return min(limited) if limited else None


def _left_in(folder: Path, version: int) -> int | None:
    limit_file, usage_file, inactive_key = _FILES[version]
    limit = read_number(folder / limit_file)
    if limit is None or limit >= _NO_LIMIT:
        return None
    usage = read_number(folder / usage_file) or 0
    inactive = 0
    try:
        for line in (folder / "memory.stat").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(" ")
            if key == inactive_key:
                inactive = int(value)
                break
    except (OSError, ValueError):
        pass
    return max(0, limit - usage + inactive)
