"""The cgroup folders of this process (Linux), where a job's memory limit and CPU quota are set.

A process sits in a cgroup per controller (cgroup v1: `/sys/fs/cgroup/<controller>/<path>`) or in one
unified cgroup (v2: `/sys/fs/cgroup/<path>`), named in `/proc/self/cgroup`. A limit may sit on any
folder above it (SLURM sets `--mem` on the job's cgroup, the task sits below), so callers read the
whole chain up to the root.
"""

from __future__ import annotations

from pathlib import Path

SELF_CGROUP = Path("/proc/self/cgroup")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_folders(controller: str) -> list[tuple[int, Path]]:
    """(cgroup version, folder) for `controller` ("memory", "cpu"): the process's own folder first, then
    each folder above it up to the hierarchy's root; empty where none can be read."""
    try:
        lines = SELF_CGROUP.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    found: list[tuple[int, Path]] = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and not controllers:
            version, base = 2, CGROUP_ROOT
        elif controller in controllers.split(","):  # mounted as `cpu,cpuacct` (and linked as `cpu`), or alone
            joint = CGROUP_ROOT / controllers
            version, base = 1, joint if joint.is_dir() else CGROUP_ROOT / controller
        else:
            continue
        parts = [part for part in path.strip("/").split("/") if part and part != ".."]
        found += [(version, base.joinpath(*parts[:depth])) for depth in range(len(parts), -1, -1)]
    return found


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        return None


def read_number(path: Path) -> int | None:
    """The number in a cgroup file; None for "max", a missing file or anything else."""
    text = read_text(path)
    return parse_int(text) if text is not None else None


def parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
