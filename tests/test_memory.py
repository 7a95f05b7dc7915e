"""What a process may still take: MemAvailable, bounded by its cgroups' memory limits."""

from __future__ import annotations

from pathlib import Path

import pytest

from iqa_cli import cgroups, memory
from iqa_cli.train.views import AUTO_PRELOAD_SHARE, FALLBACK_PRELOAD_GIB, preload_budget

GIB = 2**30


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A 512 GB node (500 GiB available) whose cgroup files live under tmp_path."""
    _write(tmp_path / "meminfo", f"MemTotal: {512 * 2**20} kB\nMemAvailable: {500 * 2**20} kB\n")
    monkeypatch.setattr(memory, "MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(cgroups, "SELF_CGROUP", tmp_path / "self_cgroup")
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path / "cgroup")
    return tmp_path


def test_a_slurm_job_limit_above_the_process_s_own_cgroup_bounds_it(machine):
    """cgroup v2, as SLURM lays it out: the job's `--mem=32G` sits on the job's cgroup, the task below."""
    _write(machine / "self_cgroup", "0::/slurm/uid_1/job_7/step_0/task_0\n")
    job = machine / "cgroup" / "slurm" / "uid_1" / "job_7"
    _write(job / "memory.max", str(32 * GIB))
    _write(job / "memory.current", str(10 * GIB))
    _write(job / "memory.stat", f"anon 123\ninactive_file {2 * GIB}\n")
    _write(job / "step_0" / "memory.max", "max")
    assert memory.available_memory_bytes() == 24 * GIB
    # `iqa train`'s default preload: 60 % of that, not of the node's 500 GiB
    assert preload_budget(None) == pytest.approx(AUTO_PRELOAD_SHARE * 24 * GIB)
    assert preload_budget(2.0) == 2 * GIB  # --preload-gb is taken as given


def test_cgroup_v1_and_its_no_limit_value(machine):
    _write(machine / "self_cgroup", "5:cpu,cpuacct:/x\n4:memory:/slurm/uid_1/job_7\n0::/\n")
    job = machine / "cgroup" / "memory" / "slurm" / "uid_1" / "job_7"
    _write(job / "memory.limit_in_bytes", str(8 * GIB))
    _write(job / "memory.usage_in_bytes", str(GIB))
    _write(job / "memory.stat", "cache 0\ntotal_inactive_file 0\n")
    assert memory.available_memory_bytes() == 7 * GIB
    _write(job / "memory.limit_in_bytes", "9223372036854771712")  # v1's "no limit"
    assert memory.available_memory_bytes() == 500 * GIB


def test_without_cgroup_files_the_machine_s_memory_stands(machine):
    assert memory.cgroup_available() is None
    assert memory.available_memory_bytes() == 500 * GIB
    (machine / "meminfo").unlink()
    assert memory.available_memory_bytes() is None and preload_budget(None) == FALLBACK_PRELOAD_GIB * GIB


def test_a_virtual_memory_limit_bounds_what_the_process_may_take(machine):
    """`ulimit -v 8G` on a login node with 500 GiB available: the preload was planned at 60 % of 500 GiB,
    far past what the process could map, so it failed in an allocation instead of computing per batch."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    mapped = int(Path("/proc/self/statm").read_text(encoding="utf-8").split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + 2 * GIB, hard))
    try:
        left = memory.address_space_left()
        assert memory.address_space_limit() == mapped + 2 * GIB
        assert left is not None and GIB < left <= 2 * GIB
        assert memory.available_memory_bytes() == left  # not the node's 500 GiB
        assert preload_budget(None) <= AUTO_PRELOAD_SHARE * 2 * GIB
        assert "virtual memory is limited to" in (memory.address_space_note() or "")
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert memory.address_space_limit() == (None if soft == resource.RLIM_INFINITY else soft)
