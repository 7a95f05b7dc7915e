"""The training loop on an in-memory dataset: learning, determinism, resumption, divergence."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch._dynamo

from iqa_cli.models.checkpoint import read_state_dict
from iqa_cli.train.data import make_parts
from iqa_cli.train.engine import FitContext, StopRequest, Trainer, TrainingDiverged, TrainingInterrupted
from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.state import load_state
from iqa_cli.train.trainer import resolve_config
from tests.train.fakes import MemoryDataset

FAST = {"freeze_epochs": 0, "optimizer": "adamw", "lr": 0.002, "batch_size": 8, "dropout": 0.0, "log_every": 1000}


def make_trainer(out: Path, dataset: MemoryDataset, stop: StopRequest | None = None, **overrides) -> Trainer:
    recipe = get_recipe("vtiqa")
    cfg = resolve_config(recipe, tiny=True, config_file=None, overrides={**FAST, **overrides})
    labels, label_map = recipe.labels(dataset, cfg.params, "memory")
    parts = make_parts(dataset, "0", select_on=cfg.engine.select_on, val_fraction=0.2, seed=cfg.engine.seed)
    ctx = FitContext(
        recipe=recipe,
        params=cfg.params,
        cfg=cfg.engine,
        dataset=dataset,
        labels=labels,
        device=torch.device("cpu"),
        meta={"method": "vtiqa", "tiny": True, "labels": label_map.to_meta()},
        tiny=True,
        stop=stop or StopRequest(),
    )
    return Trainer(ctx, parts, out)


def log_lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def dataset() -> MemoryDataset:
    return MemoryDataset(40)


def test_training_lowers_the_loss_and_writes_the_run_files(tmp_path, dataset):
    result = make_trainer(tmp_path, dataset, epochs=4).fit()
    lines = log_lines(tmp_path)
    losses = [r["loss"] for r in lines if r["part"] == "val"]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0]
    assert {r["part"] for r in lines} == {"val", "test"}
    for key in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse", "images_per_s", "lr", "split"):
        assert key in lines[0]
    assert all(r["selected_on"] == "val" for r in lines)
    assert (tmp_path / "best.safetensors").is_file() and (tmp_path / "last.pt").is_file()
    assert result.test["n"] == 10 and result.val["n"] > 0
    _, meta = read_state_dict(tmp_path / "best.safetensors")
    assert meta["model"] == "vtiqa" and meta["selected_on"] == "val"


def test_same_seed_same_numbers(tmp_path, dataset):
    first = make_trainer(tmp_path / "a", dataset, epochs=2).fit()
    second = make_trainer(tmp_path / "b", dataset, epochs=2).fit()
    a, _ = read_state_dict(tmp_path / "a" / "best.safetensors")
    b, _ = read_state_dict(tmp_path / "b" / "best.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Same weights, same predictions, same metrics. The least-squares logistic fit alone may move in
    # its last bit (numpy's SIMD loops depend on array alignment), so it is compared to 1e-12.
    fitted = ("plcc_logistic", "rmse_logistic")
    assert {k: v for k, v in first.test.items() if k not in fitted} == {
        k: v for k, v in second.test.items() if k not in fitted
    }
    assert all(math.isclose(first.test[k], second.test[k], rel_tol=1e-12) for k in fitted)
    other = make_trainer(tmp_path / "c", dataset, epochs=2, seed=1).fit()
    assert other.test != first.test


class StopAfter(StopRequest):
    """Reports a stop request from the `polls`-th check on (as a signal arriving mid-epoch would)."""

    def __init__(self, polls: int) -> None:
        super().__init__()
        self.left = polls

    @property
    def requested(self) -> bool:
        self.left -= 1
        if self.left < 0:
            self.signal_name = "SIGTERM"
        return self.left < 0


def test_resume_mid_epoch_matches_an_uninterrupted_run(tmp_path, dataset):
    make_trainer(tmp_path / "whole", dataset, epochs=3).fit()
    with pytest.raises(TrainingInterrupted) as info:
        make_trainer(tmp_path / "cut", dataset, epochs=3, stop=StopAfter(5)).fit()  # epoch 1, step 2 of 4
    assert info.value.exit_code == 143 and info.value.epoch == 1
    saved = load_state(tmp_path / "cut" / "last.pt")
    assert saved["position"]["batch"] == 2 and saved["position"]["epoch"] == 1
    make_trainer(tmp_path / "cut", dataset, epochs=3).fit(resume=True)
    whole = load_state(tmp_path / "whole" / "last.pt")["state_dict"]
    resumed = load_state(tmp_path / "cut" / "last.pt")["state_dict"]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
    best_whole, _ = read_state_dict(tmp_path / "whole" / "best.safetensors")
    best_cut, _ = read_state_dict(tmp_path / "cut" / "best.safetensors")
    assert all(torch.equal(best_whole[k], best_cut[k]) for k in best_whole)
    assert [r["loss"] for r in log_lines(tmp_path / "whole")] == [
        r["loss"] for r in log_lines(tmp_path / "cut") if "loss" in r and r.get("part")
    ]


def test_nan_loss_stops_naming_epoch_and_step_and_keeps_last_checkpoint(tmp_path, dataset):
    # A sane first epoch, then an absurd learning rate from epoch 1 on.
    trainer = make_trainer(tmp_path, dataset, epochs=3, optimizer="sgd", lr=None, lr_phases="0:0.001,1:1e30")
    with pytest.raises(TrainingDiverged, match=r"at epoch 1 step \d+") as info:
        trainer.fit()
    assert "diverged" in str(info.value) and "last good checkpoint is kept" in str(info.value)
    assert "\n" not in str(info.value)
    kept = load_state(tmp_path / "last.pt")
    assert kept["position"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in kept["state_dict"].values())


def test_views_cover_padding_and_sizes(dataset):
    recipe = get_recipe("vtiqa")
    cfg = resolve_config(recipe, tiny=True, config_file=None, overrides={})
    sizes = dataset.sizes[:3]
    images = [torch.from_numpy(dataset.images[i, :h, :w]).permute(2, 0, 1) for i, (h, w) in enumerate(sizes)]
    views = recipe.stored_views(images, cfg.params)
    assert views["global"].shape == (3, 3, 72, 72) and views["mosaic"].shape == (3, 3, 128, 128)
    assert views["global"].dtype == torch.uint8
    x_global, x_mosaic = recipe.train_inputs(views, 7, cfg.params)
    assert x_global.shape == x_mosaic.shape == (3, 3, 64, 64)
    assert np.isfinite(x_global.numpy()).all()


def test_the_loop_reads_statistics_back_only_every_readback_steps(tmp_path, dataset, monkeypatch):
    """On a GPU the host reads the step statistics every READBACK_STEPS steps and at the end of an epoch,
    never per step (a read waits for the step's backward and optimizer). Forced here on the CPU: the
    weights are the same as with a read per step, and the reads are counted."""
    reference = make_trainer(tmp_path / "every", dataset, epochs=2)
    assert reference.readback_steps() == 1  # CPU: a read costs nothing
    reference.fit()
    reads: list[int] = []
    original = Trainer._account

    def counted(self, stats, epoch, b, **kwargs):
        reads.append(b)
        return original(self, stats, epoch, b, **kwargs)

    monkeypatch.setattr(Trainer, "readback_steps", lambda self: 2)
    monkeypatch.setattr(Trainer, "_account", counted)
    sparse = make_trainer(tmp_path / "sparse", dataset, epochs=2)
    sparse.fit()
    assert sparse.batches_per_epoch == 3 and sparse.pos.step == 6  # 24 training images in batches of 8
    assert reads == [1, 2, 1, 2]  # after step 2 of each epoch (every 2 steps), then the rest at its end
    a = load_state(tmp_path / "every" / "last.pt")["state_dict"]
    b = load_state(tmp_path / "sparse" / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sparse.pos.loss_count == reference.pos.loss_count
    assert math.isclose(sparse.pos.loss_sum, reference.pos.loss_sum, rel_tol=1e-6)


def test_a_nan_loss_is_still_caught_with_sparse_readbacks(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(Trainer, "readback_steps", lambda self: 50)  # longer than an epoch: read at its end
    trainer = make_trainer(tmp_path, dataset, epochs=3, optimizer="sgd", lr=None, lr_phases="0:0.001,1:1e30")
    with pytest.raises(TrainingDiverged, match=r"at epoch 1 step 2 "):
        trainer.fit()
    assert load_state(tmp_path / "last.pt")["position"]["epoch"] == 1  # the good state from before


def test_the_evaluation_precision_rule():
    """GPU evaluation defaults to TF32 matrix products with float32 outputs (fast, no ties); GPU training to
    bf16 autocast; the CPU stays float32. bf16 outputs tie: near 3 they fall on 1/64 steps."""
    from iqa_cli.train.precision import TF32, amp_dtype, autocast

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert amp_dtype("auto", cuda, evaluation=True) == TF32 and amp_dtype("auto", cuda) == torch.bfloat16
    assert amp_dtype("auto", cpu, evaluation=True) is None and amp_dtype("tf32", cpu) is None
    assert amp_dtype("off", cuda, evaluation=True) is None
    assert amp_dtype("bf16", cuda, evaluation=True) == torch.bfloat16
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with autocast(cuda, TF32):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    scores = 3.0 + torch.rand(234, generator=torch.Generator().manual_seed(0))  # 234 test images
    assert scores.unique().numel() == 234
    assert scores.to(torch.bfloat16).unique().numel() < 100  # why bf16 is not the evaluation default


def test_compile_marks_the_batch_dynamic_so_no_epoch_recompiles(tmp_path, dataset, monkeypatch):
    """--compile: one graph for every batch size (the first epoch's smaller last batch, later epochs);
    compiles counted with a backend that records them (no C++ toolchain needed)."""
    compiles: list[int] = []
    real_compile = torch.compile

    def counting_backend(gm, example_inputs):
        compiles.append(len(example_inputs))
        return gm.forward

    monkeypatch.setattr(torch, "compile", lambda module, **kw: real_compile(module, backend=counting_backend))
    torch._dynamo.reset()
    trainer = make_trainer(tmp_path, dataset, epochs=2, compile=True, batch_size=7)  # 24 images: 7, 7, 7, 3
    seen = []
    original = Trainer._train_epoch

    def epoch_and_count(self, epoch):
        result = original(self, epoch)
        seen.append(len(compiles))
        return result

    monkeypatch.setattr(Trainer, "_train_epoch", epoch_and_count)
    from iqa_cli.train.engine import BatchDynamic

    calls: list[tuple[int, int]] = []  # (batch size, graphs compiled before the call)
    forward = BatchDynamic.forward

    def noting(self, *args, **kwargs):
        calls.append((args[0].shape[0], len(compiles)))
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(BatchDynamic, "forward", noting)
    trainer.fit()
    assert trainer.batches_per_epoch == 4 and seen[0] >= 1
    sizes = [size for size, _ in calls]
    assert sizes[:4] == [7, 7, 7, 3]
    assert calls[1][1] == calls[3][1] == seen[0]  # the smaller last batch compiled nothing new
    assert seen[1] == seen[0]  # neither did the second epoch
    torch._dynamo.reset()


def test_a_watch_or_sweep_that_measured_nothing_is_an_error():
    """NaN everywhere is no result: a watched dataset with no finite SRCC in any round, or a swept value
    whose runs all gave NaN, ends in an error naming it (the figures stay on disk)."""
    from iqa_cli.errors import DataError
    from iqa_cli.train.sweep import check_means
    from iqa_cli.train.watch import check_measured

    good = {"last_srcc": 0.5, "max_abs_srcc": 0.6}
    check_measured({"csiq": good, "tid": {"last_srcc": math.nan, "max_abs_srcc": 0.1}}, ["csiq", "tid"], "run")
    with pytest.raises(DataError, match="watched dataset 'tid': no round gave a finite SRCC"):
        check_measured({"csiq": good, "tid": {"last_srcc": math.nan, "max_abs_srcc": math.nan}}, ["csiq", "tid"], "r")
    with pytest.raises(DataError, match="watched dataset 'kadid'"):
        check_measured({"csiq": good}, ["csiq", "kadid"], "run")
    table = {"columns": ["srcc"], "field": "lr", "sweep": "/tmp/s", "by_value": [{"value": "1", "mean_srcc": 0.4}]}
    check_means(table)
    table["by_value"].append({"value": "2", "mean_srcc": math.nan})
    with pytest.raises(DataError, match="--sweep lr=2: no run gave a finite srcc"):
        check_means(table)


def test_a_swept_value_whose_mean_would_skip_unmeasured_runs_is_an_error():
    from iqa_cli.errors import DataError
    from iqa_cli.train.sweep import check_means

    runs = [{"value": "1", "seed": 0, "srcc": 0.5}, {"value": "1", "seed": 1, "srcc": math.nan},
            {"value": "2", "seed": 0, "srcc": 0.4}]  # fmt: skip
    table = {"columns": ["srcc"], "field": "lr", "sweep": "/tmp/s", "runs": runs,
             "by_value": [{"value": "1", "mean_srcc": 0.5}, {"value": "2", "mean_srcc": 0.4}]}  # fmt: skip
    with pytest.raises(DataError, match=r"--sweep lr=1: 1 of 2 runs gave no finite srcc \(seed 1\): a mean over"):
        check_means(table)


def test_half_precision_evaluation_ties_are_warned_once_per_split(tmp_path, dataset, caplog, monkeypatch):
    """bf16 outputs fall on 1/64 steps near 3: selection then ranks on ties. Said at the first evaluation
    that ties, not at every one."""
    import logging

    trainer = make_trainer(tmp_path, dataset, epochs=3, eval_amp="bf16")
    monkeypatch.setattr(trainer, "predict", lambda idx: 3.0 + np.arange(len(idx)) // 2 / 64)  # tied in pairs
    with caplog.at_level(logging.INFO, logger="iqa_cli.train.engine"):
        trainer.fit()
    warned = [r.message for r in caplog.records if "distinct predictions" in r.message]
    assert len(warned) == 1 and warned[0].startswith("split 0: bf16 evaluation gave")
    levels = [r.levelno for r in caplog.records if "distinct predictions" in r.message]
    assert levels == [logging.WARNING]  # a warning, so `-q` shows it too
    assert "--eval-amp tf32 or off" in warned[0]


def test_a_sigterm_whose_exception_was_lost_before_training_stops_the_loop_with_a_saved_state():
    """The CLI's SIGTERM handler raised where Python discarded the exception (iqa_cli.stop): training must
    still stop, at its first step, and its resumable state must be saved, not blocked by the request."""
    from iqa_cli.stop import request_stop, stop_requested

    request_stop()
    with StopRequest() as stop:
        assert stop.requested and stop.signal_name == "SIGTERM"
        assert not stop_requested()  # handed over: the state's atomic save is not refused
    with StopRequest() as later:
        assert not later.requested
    request_stop("SIGINT")  # a lost Ctrl-C is honoured the same way, and named as what it was
    with StopRequest() as stop:
        assert stop.signal_name == "SIGINT" and not stop_requested()


def test_a_first_ctrl_c_asks_the_loop_to_stop_and_a_second_stops_at_once():
    import os
    import signal

    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT"  # the step finishes, the state is saved
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back
