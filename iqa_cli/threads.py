"""How many threads torch may use on the CPU: the cores this process may really use, less one for
iqa's own prefetch thread.

torch's default (every core for intra-op work) oversubscribes small machines: on 2 cores, two torch
threads plus the prefetch thread ran the demo in 655 s against 313 s with one torch thread, and a
rank collapsed 7x beside another busy process. The budget honours, in this order: an explicit
`OMP_NUM_THREADS` (the user's word), SLURM's `SLURM_CPUS_PER_TASK`, a cgroup CPU quota (a container's
`--cpus`) and the process's CPU affinity (`taskset`, cgroup cpusets); a DDP job divides it between the
ranks of one node.

Standalone inference is the other way round: the forward is the work and iqa's own thread only hands
batches over, so `iqa eval`, `iqa predict` and the Python scorer give torch the whole share
(`inference_threads`; the validation passes inside a training run keep the training policy, which
holds up beside a busy process). On 2 cores the bare full-size VT-IQA forward takes about half as
long with 2 threads as with 1 (README, Benchmarks: `benchmarks/bench_eval.py`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OWN_THREADS = 1  # the prefetch thread that cuts the next batch while torch computes


def _int_env(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by SLURM_CPUS_PER_TASK and by a cgroup's
    CPU quota (a container's `--cpus`, which leaves the affinity at every core of the host)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    caps = [cap for cap in (_int_env("SLURM_CPUS_PER_TASK"), cpu_quota_cores()) if cap]
    return max(1, min([cores, *caps]))


def cpu_quota_cores() -> int | None:
    """The cores a CFS quota on this process's cgroups allows, rounded up (`--cpus 2.5` -> 3), or None
    without one: cgroup v2 `cpu.max` ("QUOTA PERIOD", "max" for none), v1 `cpu.cfs_quota_us` (-1 for
    none) over `cpu.cfs_period_us`."""
    from iqa_cli.cgroups import cgroup_folders, parse_int, read_number, read_text

    allowed: list[int] = []
    for version, folder in cgroup_folders("cpu"):
        if version == 2:
            quota_text, _, period_text = (read_text(folder / "cpu.max") or "max").partition(" ")
            quota = None if quota_text == "max" else parse_int(quota_text)
            period = parse_int(period_text or "100000")
        else:
            quota, period = read_number(folder / "cpu.cfs_quota_us"), read_number(folder / "cpu.cfs_period_us")
        if quota is not None and quota > 0 and period:
            allowed.append(max(1, math.ceil(quota / period)))
    return min(allowed) if allowed else None


def users_threads() -> int | None:
    """OMP_NUM_THREADS as the user set it; None where it is unset, not a count, or torchrun's own default
    (`threads_set_by_torchrun`), which iqa's policy replaces for the CLI and the Python API alike."""
    value = _int_env("OMP_NUM_THREADS")
    return None if value is None or threads_set_by_torchrun() else value


def torch_threads(*, ranks_on_node: int = 1, own_threads: int = OWN_THREADS) -> int:
    """The intra-op thread count for torch: the user's OMP_NUM_THREADS when set, else this rank's share
    of the cores less iqa's own threads (at least 1)."""
    explicit = users_threads()
    if explicit:
        return explicit
    share = available_cores() // max(1, ranks_on_node)
    return max(1, share - own_threads)


def threads_set_by_torchrun() -> bool:
    """Whether OMP_NUM_THREADS=1 is torchrun's default rather than the user's: torchrun gives every rank
    that value when its own environment has none (its warning says so), and it starts the ranks itself,
    so its environment is the parent process's (Linux's /proc; elsewhere the value is kept). Ranks that
    torchrun did not start (no TORCHELASTIC_RUN_ID) keep it: their parent may be any launcher."""
    if os.environ.get("OMP_NUM_THREADS") != "1" or not os.environ.get("TORCHELASTIC_RUN_ID"):
        return False
    try:
        parent = Path(f"/proc/{os.getppid()}/environ").read_bytes()
    except OSError:
        return False
    return not any(entry.startswith(b"OMP_NUM_THREADS=") for entry in parent.split(b"\0"))


def apply_thread_policy(*, ranks_on_node: int = 1) -> int:
    """Set torch's intra-op threads by `torch_threads` (CPU work only; GPUs are unaffected); returns it."""
    import torch

    count = torch_threads(ranks_on_node=ranks_on_node)
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    source = "OMP_NUM_THREADS" if users_threads() else f"{available_cores()} usable cores"
    log.debug(f"torch intra-op threads: {count} ({source}, {ranks_on_node} rank(s) on this node)")
    return count


def inference_threads(device: Any, *, ranks_on_node: int = 1) -> contextlib.AbstractContextManager[int | None]:
    """Standalone scoring on the CPU (`iqa eval`, `iqa predict`, the Python scorer): torch takes the whole
    share of the cores while it runs (see the module's docstring); on a GPU nothing changes."""
    if getattr(device, "type", str(device)) != "cpu":
        return contextlib.nullcontext()
    return bulk_threads(ranks_on_node=ranks_on_node)


@contextlib.contextmanager
def bulk_threads(*, ranks_on_node: int = 1) -> Iterator[int]:
    """Work during which iqa runs no thread of its own (preparing every view before a run or an
    evaluation): torch may take the whole share of the cores, then the policy's count comes back.
    An explicit OMP_NUM_THREADS is left as it is."""
    import torch

    before = torch.get_num_threads()
    count = before if users_threads() else torch_threads(ranks_on_node=ranks_on_node, own_threads=0)
    if count != before:
        torch.set_num_threads(count)
    try:
        yield count
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
