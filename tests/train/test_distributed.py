"""`DistContext.check_same_data`: ranks that read other data (or another copy of a run) are refused alike."""

from __future__ import annotations

import pytest

from iqa_cli.errors import DataError
from iqa_cli.train.distributed import RUN_FOLDER_ADVICE, DistContext


class _Gathered(DistContext):
    """Two ranks whose gathered records are given: what each rank would see after `all_gather_object`."""

    def __init__(self, records: list[tuple[str, str, str]]) -> None:
        super().__init__(rank=0, world=len(records))
        self.records = records

    def gather(self, obj):
        return [obj, *self.records[1:]]


def test_one_rank_checks_nothing():
    DistContext().check_same_data("--data", "/x.h5", {"images_digest": "a"})


def test_ranks_that_agree_pass():
    ranks = _Gathered([("a", "/x.h5", ""), ("b", "/y.h5", '{"count": 3, "images_digest": "a"}')])
    ranks.check_same_data("--data", "/x.h5", {"images_digest": "a", "count": 3})


def test_a_rank_with_other_data_is_named_with_what_differs():
    ranks = _Gathered([("a", "/x.h5", ""), ("node7", "/scratch/x.h5", '{"count": 3, "images_digest": "b"}')])
    with pytest.raises(DataError) as caught:
        ranks.check_same_data("--data", "/x.h5", {"images_digest": "a", "count": 3})
    message = str(caught.value)
    assert message.startswith("--data: rank 1 (host node7) read /scratch/x.h5 and rank 0 (host ")
    assert "(images_digest)" in message and "copy it to every node again" in message


def test_a_rank_that_resumed_elsewhere_is_told_to_share_the_runs_folder():
    ranks = _Gathered([("a", "", ""), ("node2", "/local/run/last.pt", '{"resumed_at": null}')])
    with pytest.raises(DataError, match=r"\(resumed_at\); every rank must go on from the run's own files") as caught:
        ranks.check_same_data("--resume", "/shared/run/last.pt", {"resumed_at": [3, 12]}, advice=RUN_FOLDER_ADVICE)
    assert "$IQA_RUNS" in str(caught.value)


def test_one_gpu_named_for_several_ranks_of_a_node_is_refused(monkeypatch):
    """`--device cuda:1` under `torchrun --nproc_per_node 4` put every rank on one GPU, which NCCL refuses
    later with "Duplicate GPU detected" (or which shares one GPU four ways)."""
    from iqa_cli.errors import ConfigError
    from iqa_cli.train.distributed import resolve_device

    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match=r"--device cuda:1: the 4 ranks of this node would all run on that one GPU"):
        resolve_device("cuda:1", local_rank=2)


def test_more_ranks_on_a_node_than_gpus_is_refused(monkeypatch):
    """`torchrun --nproc_per_node 4` on a node with 2 visible GPUs gave ranks 2 and 3 the GPUs of ranks 0 and
    1 (LOCAL_RANK modulo the count), which NCCL refuses mid-start."""
    import torch

    from iqa_cli.errors import ConfigError
    from iqa_cli.train.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match=r"4 ranks on this node but 2 visible GPU\(s\); start at most 2 per node"):
        resolve_device("auto", local_rank=3)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert resolve_device("cuda", local_rank=1) == torch.device("cuda", 1)


@pytest.mark.parametrize("given", ["mps", "gpu", "cuda:x", "cuda:-1", "cuda0", ""])
def test_a_device_that_is_no_device_name_is_refused_even_on_a_gpu_node(monkeypatch, given):
    """On a GPU node `--device mps` or `cuda:x` ended in an internal IndexError/ValueError (exit 1), and on a
    CPU one in "no CUDA device is available", which was not what was wrong."""
    import torch

    from iqa_cli.errors import ConfigError
    from iqa_cli.train.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"expected auto, cpu, cuda or cuda:N"):
        resolve_device(given)
    assert resolve_device(" CPU ").type == "cpu"  # the case and blanks of a typed name do not matter


def _sync_on_two_ranks(rank: int, folder: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/rendezvous", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # one model on both ranks, as DDP starts it
        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
        model = model.to(memory_format=torch.channels_last)  # a weight no plain layout holds
        ranks = DistContext(rank=rank, world=2)
        in_step = ranks.sync_model(model)
        with torch.no_grad():
            if rank == 1:  # an optimizer step that rounded otherwise, and statistics of its own batches
                model[0].weight.add_(1e-7)
                model[1].running_mean.add_(1.0)
        drifted = ranks.sync_model(model)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        torch.save({"flags": torch.tensor([in_step, drifted]), **state}, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ranks_that_drifted_apart_take_rank_0s_weights_and_buffers(tmp_path):
    """DDP averages gradients, not weights: each rank evaluated its share of a test with its own drifted
    model. `sync_model` gives every rank rank 0's parameters (a channels-last weight too) and buffers."""
    import torch
    import torch.multiprocessing as mp

    mp.spawn(_sync_on_two_ranks, args=(str(tmp_path),), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert first["flags"].tolist() == second["flags"].tolist() == [False, True]
    for key, value in first.items():
        assert torch.equal(value, second[key]), key
