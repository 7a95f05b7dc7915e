"""Devices and DDP: `torchrun` sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR; we join the group.

NCCL on GPUs, gloo on CPU. Every rank holds the same model, sees a disjoint shard of each epoch's
shuffled training order, evaluates a contiguous share of the evaluated images; predictions are
gathered so all ranks take the same decisions (best epoch, plateau, stop). Only rank 0 writes files.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import socket
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from iqa_cli.errors import ConfigError, DataError

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """The torch device for `--device`; on the CPU, torch's thread count follows `iqa_cli.threads`."""
    given, preference = preference, preference.strip().lower()
    if not _DEVICE.fullmatch(preference):  # `mps`, `gpu`, `cuda:x`: no internal IndexError on a GPU node
        raise ConfigError(f"--device {given!r}: expected auto, cpu, cuda or cuda:N (N a GPU's index)")
    if preference == "cpu":
        return _cpu()
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
        if preference == "cpu":
            return _cpu()
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if preference.startswith("cuda:") and ranks_here > 1:
        raise ConfigError(
            f"--device {preference}: the {ranks_here} ranks of this node would all run on that one GPU; give "
            "--device cuda (or auto): each rank takes the GPU of its LOCAL_RANK (choose them with CUDA_VISIBLE_DEVICES)"
        )
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {preference}: no CUDA device is available (use --device cpu or auto)")
    if preference == "cuda":
        count = torch.cuda.device_count()
        if ranks_here > count:  # ranks would share GPUs: NCCL refuses it mid-start ("Duplicate GPU detected")
            raise ConfigError(
                f"--device {preference}: {ranks_here} ranks on this node but {count} visible GPU(s); start at most "
                f"{count} per node (torchrun --nproc_per_node {count})"
            )
        return torch.device("cuda", local_rank)
    index = int(preference.split(":", 1)[1])
    if index >= torch.cuda.device_count():
        raise ConfigError(f"--device {preference}: only {torch.cuda.device_count()} CUDA device(s) present")
    return torch.device("cuda", index)


# What a rank that resumed from other files than rank 0 is told.
RUN_FOLDER_ADVICE = (
    "every rank must go on from the run's own files: put the runs folder ($IQA_RUNS) on a file system every node shares"
)


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def all_reduce(self, tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
        if self.active:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
        return tensor

    def gather(self, obj: Any) -> list[Any]:
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def check_same_data(
        self,
        what: str,
        path: str | os.PathLike[str],
        identity: dict[str, Any],
        *,
        advice: str = "every rank must read the same dataset: copy it to every node again, or read it from a "
        "shared file system",
    ) -> None:
        """Refuse, on every rank alike, data that is not the same on every rank: `identity` (e.g.
        `cache_identity`) of what this rank opened at `path`. Each node of a multi-node job resolves a
        dataset name through its own $IQA_HOME or reads a copy on local scratch; a stale copy on one node
        would train and score other images than rank 0's under the same indices, without a word."""
        if not self.active:
            return
        mine = json.dumps(identity, sort_keys=True, default=str)
        records = self.gather((socket.gethostname(), os.fspath(path), mine))
        first_host, first_path, first = records[0]
        for rank, (host, other_path, theirs) in enumerate(records):
            if theirs == first:
                continue
            a, b = json.loads(first), json.loads(theirs)
            differ = sorted(key for key in set(a) | set(b) if a.get(key) != b.get(key))
            raise DataError(
                f"{what}: rank {rank} (host {host}) read {other_path} and rank 0 (host {first_host}) "
                f"{first_path}, and they differ ({', '.join(differ)}); {advice}"
            )

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sync_model(self, module: torch.nn.Module) -> bool:
        """Give every rank rank 0's parameters and buffers, so that every rank evaluates and keeps one model;
        True where some rank's parameters had drifted from rank 0's.

        DDP only averages gradients: ranks whose optimizer steps round differently (other GPU types or
        kernels) drift apart, and each rank scores its share of an evaluation with its own weights. Buffers
        (BatchNorm running statistics) DDP broadcasts only at the start of each forward, so they differ
        after an epoch's last step."""
        if not self.active:
            return False
        params = [p.detach() for p in module.parameters()]
        drifted = False
        if params:
            # One float64 sum per tensor: a drift of one ulp in one weight changes it.
            sums = torch.nan_to_num(torch.stack([p.double().sum() for p in params]), nan=0.0)
            bounds = torch.cat([sums, -sums])
            dist.all_reduce(bounds, op=dist.ReduceOp.MAX)
            drifted = bool((bounds[: len(params)] != -bounds[len(params) :]).any())
        for tensor in [*params, *(b.detach() for b in module.buffers())]:
            if tensor.is_contiguous():
                dist.broadcast(tensor, src=0)
            else:  # a channels-last convolution weight: a backend may want a plain layout
                staged = tensor.contiguous()
                dist.broadcast(staged, src=0)
                tensor.copy_(staged)
        return drifted

    def shutdown(self) -> None:
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()


def _cpu() -> torch.device:
    from iqa_cli.threads import apply_thread_policy

    apply_thread_policy(ranks_on_node=int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return torch.device("cpu")


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's variables; (0, 1, 0) outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world, local


def init_distributed(device: torch.device) -> DistContext:
    rank, world, local = env_world()
    if world <= 1:
        return DistContext()
    if dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), local)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistContext(rank, world, local, initialised_here=True)


def shard(order: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This rank's share of an epoch order: padded by wrapping to a multiple of `world` (as torch's
    DistributedSampler), then every world-th item from position `rank`. Shares are disjoint except
    for the at most world-1 padding items."""
    order = np.asarray(order)
    if world <= 1:
        return order
    total = -(-order.size // world) * world
    padded = np.concatenate([order, order[: total - order.size]]) if total > order.size else order
    return padded[rank::world]


def contiguous_share(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Evaluation share: contiguous, no padding (gathered results concatenate back in order)."""
    bounds = np.linspace(0, len(indices), world + 1).astype(int)
    return np.asarray(indices)[bounds[rank] : bounds[rank + 1]]
