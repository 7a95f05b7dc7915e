"""The CPU thread policy: OMP_NUM_THREADS wins, else the usable cores (affinity, SLURM, a CPU quota) less
iqa's own prefetch thread, shared between the ranks of a node."""

from __future__ import annotations

import os

import pytest
import torch

from iqa_cli import cgroups, threads
from iqa_cli.train.distributed import resolve_device
from tests.torchrun_parent import started_by_torchrun


def test_thread_budget(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(threads, "cpu_quota_cores", lambda: None)  # whatever quota the test machine has
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert threads.available_cores() == 8 and threads.torch_threads() == 7
    assert threads.torch_threads(ranks_on_node=4) == 1 and threads.torch_threads(ranks_on_node=2) == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert threads.available_cores() == 4 and threads.torch_threads() == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert threads.torch_threads() == 1  # 2 cores: one for torch, one for the prefetch thread
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert threads.torch_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.torch_threads() == 3  # the user's word wins
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert threads.torch_threads() == 1


def _cgroup(tmp_path, monkeypatch, self_cgroup: str, files: dict[str, str]) -> None:
    (tmp_path / "self_cgroup").write_text(self_cgroup, encoding="utf-8")
    for name, text in files.items():
        path = tmp_path / "cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(cgroups, "SELF_CGROUP", tmp_path / "self_cgroup")
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path / "cgroup")


def test_a_container_s_cpu_quota_caps_the_cores(tmp_path, monkeypatch):
    """`docker run --cpus 2.5` (or a Kubernetes CPU limit) leaves the affinity at every core of the host:
    torch took 64 threads, and prepare started 64 decoders, on 2.5 cores' worth of CPU time."""
    from iqa_cli.data.decode import default_workers

    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    _cgroup(tmp_path, monkeypatch, "0::/kubepods/pod1/c1\n", {"kubepods/pod1/cpu.max": "250000 100000"})
    assert threads.cpu_quota_cores() == 3 and threads.available_cores() == 3 and default_workers() == 3
    _cgroup(tmp_path, monkeypatch, "0::/kubepods/pod1/c1\n", {"kubepods/pod1/cpu.max": "max 100000"})
    assert threads.cpu_quota_cores() is None and threads.available_cores() == 64
    # cgroup v1, `cpu,cpuacct` mounted together: the quota on the job, none on the step below it
    v1 = {"cpu,cpuacct/job/cpu.cfs_quota_us": "150000", "cpu,cpuacct/job/cpu.cfs_period_us": "100000"}
    v1 |= {"cpu,cpuacct/job/step/cpu.cfs_quota_us": "-1", "cpu,cpuacct/job/step/cpu.cfs_period_us": "100000"}
    _cgroup(tmp_path, monkeypatch, "3:cpu,cpuacct:/job/step\n", v1)
    assert threads.cpu_quota_cores() == 2 and threads.available_cores() == 2


def test_resolving_the_cpu_applies_the_policy(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert resolve_device("cpu").type == "cpu" and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_bulk_work_takes_the_whole_share_and_gives_it_back(monkeypatch):
    """Preparing views runs before any iqa thread: it may use every core of the share, then the policy's
    count returns; an explicit OMP_NUM_THREADS stays as it is."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        with threads.bulk_threads() as count:
            assert count == 4 and torch.get_num_threads() == 4
        assert torch.get_num_threads() == 3
        with threads.bulk_threads(ranks_on_node=2) as count:
            assert count == 2
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        with threads.bulk_threads() as count:
            assert count == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_standalone_scoring_takes_every_core_on_the_cpu_only(monkeypatch):
    """`iqa eval`/`predict` give torch the whole share while they score (the forward is the work); on a GPU
    nothing changes, and under torchrun the node's share is divided between its ranks."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(3)  # the training policy's count on 4 cores
        with threads.inference_threads(torch.device("cpu")):
            assert torch.get_num_threads() == 4
        assert torch.get_num_threads() == 3
        with threads.inference_threads(torch.device("cpu"), ranks_on_node=2):
            assert torch.get_num_threads() == 2
        with threads.inference_threads(torch.device("cuda", 0)):
            assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("users", [False, True])
def test_torchrun_s_one_thread_default_gives_way_to_the_policy_in_python_too(monkeypatch, users):
    """The rule that tells torchrun's OMP_NUM_THREADS=1 from the user's was applied by the CLI only: a
    rank calling `iqa_cli.train(...)` from Python kept one thread on a node whose cores it shares with no
    one. The policy itself now tells them apart."""
    with started_by_torchrun(monkeypatch, users=users):
        monkeypatch.setattr(threads, "available_cores", lambda: 8)
        assert threads.torch_threads(ranks_on_node=2) == (1 if users else 3)
        with threads.bulk_threads(ranks_on_node=1) as count:
            assert count == (torch.get_num_threads() if users else 8)
