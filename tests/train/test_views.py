"""ViewStore / BatchIterator: preloaded and streamed batches give the same network inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.trainer import resolve_config
from iqa_cli.train.views import ViewStore, keep_on_device
from tests.train.fakes import MemoryDataset


@pytest.fixture(scope="module")
def setup():
    dataset = MemoryDataset(24)
    recipe = get_recipe("vtiqa")
    params = resolve_config(recipe, tiny=True, config_file=None, overrides={}).params
    return dataset, recipe, params


def stores(setup):
    dataset, recipe, params = setup
    indices = np.arange(len(dataset))
    cpu = torch.device("cpu")
    preloaded = ViewStore(dataset, recipe, params, cpu, indices, budget_bytes=1e12)
    streamed = ViewStore(dataset, recipe, params, cpu, indices, budget_bytes=0)
    assert preloaded.preloaded and not streamed.preloaded
    return preloaded, streamed


def test_host_cut_training_crops_equal_the_device_path(setup):
    dataset, recipe, params = setup
    preloaded, streamed = stores(setup)
    batches = [np.array([5, 1, 17, 3]), np.array([20, 0, 9]), np.array([2, 2, 11])]
    seeds = [7, 1234, 99]
    with preloaded.batches(batches, seeds) as cut, streamed.batches(batches, seeds) as full:
        for (rows_a, views_a), (rows_b, views_b), seed in zip(cut, full, seeds, strict=True):
            assert np.array_equal(rows_a, rows_b)
            # The host path sends only the crops (network-input sized), the streamed one the whole views.
            assert all(t.shape[-1] == params.crop_size for t in views_a.values())
            assert views_b["mosaic"].shape[-1] == params.mosaic_source
            for a, b in zip(
                recipe.train_inputs(views_a, seed, params), recipe.train_inputs(views_b, seed, params), strict=True
            ):
                assert torch.equal(a, b)


def test_evaluation_batches_send_the_full_views(setup):
    _, recipe, params = setup
    preloaded, streamed = stores(setup)
    batches = [np.array([0, 4, 8])]
    with preloaded.batches(batches) as a, streamed.batches(batches) as b:
        (_, views_a), (_, views_b) = next(iter(a)), next(iter(b))
    assert set(views_a) == {"global", "mosaic"}
    for x, y in zip(recipe.eval_inputs(views_a, params), recipe.eval_inputs(views_b, params), strict=True):
        assert torch.equal(x, y)


def test_seeds_must_match_the_batches(setup):
    preloaded, _ = stores(setup)
    with pytest.raises(ValueError, match="2 seeds for 1 batches"):
        preloaded.batches([np.array([0])], [1, 2])


def test_device_resident_store_gives_the_same_batches(setup):
    """`resident="on"` keeps the views where the model runs and gathers batches there (the GPU path,
    exercised here on the CPU): the same crops as the host path, for training and evaluation."""
    dataset, recipe, params = setup
    preloaded, _ = stores(setup)
    resident = ViewStore(
        dataset, recipe, params, torch.device("cpu"), np.arange(len(dataset)), budget_bytes=1e12, resident="on"
    )
    assert resident.resident and not preloaded.resident and "kept in cpu memory" in resident.describe()
    batches, seeds = [np.array([4, 0, 21]), np.array([7, 7, 13, 2])], [5, 6]
    with resident.batches(batches, seeds) as a, preloaded.batches(batches, seeds) as b:
        for (_, views_a), (_, views_b), seed in zip(a, b, seeds, strict=True):
            inputs = zip(
                recipe.train_inputs(views_a, seed, params), recipe.train_inputs(views_b, seed, params), strict=True
            )
            assert all(torch.equal(x, y) for x, y in inputs)
    with resident.batches(batches) as a, preloaded.batches(batches) as b:
        for (_, views_a), (_, views_b) in zip(a, b, strict=True):
            assert all(torch.equal(views_a[k], views_b[k]) for k in ("global", "mosaic"))


def test_resident_modes():
    cpu = torch.device("cpu")
    assert keep_on_device("on", cpu, 10**12) and not keep_on_device("off", cpu, 1)
    assert not keep_on_device("auto", cpu, 1)  # on the CPU, host memory is the device's
    with pytest.raises(ValueError, match="resident must be one of"):
        keep_on_device("yes", cpu, 1)


class FakeEvent:
    """Stands in for torch.cuda.Event on the CPU: records when the slot was sent and when it was waited for."""

    log: list[str] = []

    def __init__(self) -> None:
        self.recorded = False

    def record(self) -> None:
        self.recorded = True

    def synchronize(self) -> None:
        assert self.recorded, "waited for a slot whose copy was never queued"
        FakeEvent.log.append("wait")


@pytest.mark.parametrize("budget", [1e12, 0], ids=["preloaded", "streamed"])
def test_pinned_staging_reuses_a_few_buffers_and_gives_the_same_batches(setup, budget):
    """The GPU data path: batches go through a ring of reusable (pinned) staging buffers, a slot reused
    only after its previous copy's event; exercised on the CPU with ordinary memory and fake events."""
    from iqa_cli.train.views import STAGING_SLOTS, PinnedStaging

    dataset, recipe, params = setup
    indices = np.arange(len(dataset))
    plain = ViewStore(dataset, recipe, params, torch.device("cpu"), indices, budget_bytes=budget)
    staged = ViewStore(dataset, recipe, params, torch.device("cpu"), indices, budget_bytes=budget)
    assert staged.staging is None  # only a CUDA device stages
    staged.staging = PinnedStaging(STAGING_SLOTS, pin=False, event_factory=FakeEvent)
    assert all(not t.is_pinned() for t in staged.host.values())  # the store itself is never pinned
    FakeEvent.log = []
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(dataset), size=5, replace=False) for _ in range(9)]
    seeds = list(range(9))
    with plain.batches(batches, seeds) as a, staged.batches(batches, seeds) as b:
        for (_, views_a), (_, views_b), seed in zip(a, b, seeds, strict=True):
            inputs = zip(
                recipe.train_inputs(views_a, seed, params), recipe.train_inputs(views_b, seed, params), strict=True
            )
            assert all(torch.equal(x, y) for x, y in inputs)
    assert staged.staging.allocations == STAGING_SLOTS  # one buffer per slot, reused (not one per batch)
    assert FakeEvent.log == ["wait"] * (len(batches) - STAGING_SLOTS)  # each reuse waits for its last copy


def test_staging_refuses_a_prefetch_deeper_than_its_slots(setup):
    from iqa_cli.train.views import PinnedStaging

    dataset, recipe, params = setup
    store = ViewStore(dataset, recipe, params, torch.device("cpu"), np.arange(4), budget_bytes=1e12)
    store.staging = PinnedStaging(3, pin=False, event_factory=FakeEvent)
    with pytest.raises(ValueError, match="prefetch depth 2 needs 4 staging slots"):
        store.batches([np.array([0])])


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_scoring_store_keeps_only_the_test_crops_with_the_same_inputs(size):
    # Full size: 384x512 (exact rows) and 496x376 images; tiny: every side exact for the 128 px mosaic.
    dataset = MemoryDataset(6, height=384, width=512) if size == "full" else MemoryDataset(6)
    recipe = get_recipe("vtiqa")
    params = resolve_config(recipe, tiny=size == "tiny", config_file=None, overrides={}).params
    indices = np.arange(len(dataset))
    cpu = torch.device("cpu")
    full = ViewStore(dataset, recipe, params, cpu, indices, budget_bytes=1e12)
    scoring = ViewStore(dataset, recipe, params, cpu, indices, budget_bytes=1e12, scoring=True)
    assert scoring.nbytes * 2 < full.nbytes
    batches = [np.array([0, 1, 2]), np.array([5, 3])]
    with full.batches(batches) as a, scoring.batches(batches) as b:
        for (_, views_a), (_, views_b) in zip(a, b, strict=True):
            assert all(t.shape[-2:] == (params.crop_size, params.crop_size) for t in views_b.values())
            for x, y in zip(recipe.eval_inputs(views_a, params), recipe.eval_inputs(views_b, params), strict=True):
                assert torch.equal(x, y)


def test_the_original_variant_scores_from_the_whole_views(setup):
    _, recipe, params = setup
    from dataclasses import replace

    original = replace(params, variant="original")
    assert recipe.scoring_view_shapes(original) == recipe.view_shapes(original)


def test_a_shared_view_file_is_created_never_opened_over_another_job_s(tmp_path):
    """Containers that share one /dev/shm (`--ipc=host`) each count their own process ids, so two DDP jobs
    could name their view files alike; `w+` truncated the other job's file, changing its training data."""
    from iqa_cli.train.views import _mapped

    other = tmp_path / "iqa-views-15-x-vtiqa-global.u8"
    other.write_bytes(bytes(range(24)))
    with pytest.raises(FileExistsError):
        _mapped(other, (2, 3, 4), "w+")
    assert other.read_bytes() == bytes(range(24))
    mine = _mapped(tmp_path / "mine.u8", (2, 3, 4), "w+")
    mine[1] = 7
    again = _mapped(tmp_path / "mine.u8", (2, 3, 4), "r+")
    assert (tmp_path / "mine.u8").stat().st_size == 24 and int(again[1, 0, 0]) == 7


def test_a_node_is_known_by_torchrun_s_node_rank_before_its_host_name(monkeypatch):
    import socket

    from iqa_cli.train.views import node_key

    monkeypatch.setenv("GROUP_RANK", "3")
    assert node_key() == "node 3"
    monkeypatch.delenv("GROUP_RANK")
    assert node_key() == socket.gethostname()
