"""`iqa train vtiqa` end to end on small real caches: run folder, selection labels, config, resume
after SIGTERM, DDP with two gloo ranks, and every bad input giving one line and a non-zero exit."""

from __future__ import annotations

import codecs
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.errors import ConfigError
from iqa_cli.home import data_dir, runs_dir
from iqa_cli.train.runs import read_log
from iqa_cli.train.state import load_state
from tests.cli.options import without
from tests.train.caches import make_cache
from tests.train.fakes import constant_predictions_on_call

runner = CliRunner()
FAST = ["--tiny", "--freeze-epochs", "0", "--optimizer", "adamw", "--lr", "0.002", "--batch-size", "8"]
FAST += ["--dropout", "0", "--device", "cpu"]
FAST += ["--val-fraction", "0.2"]  # a validation part of at least 3 images (a correlation needs 3)


@pytest.fixture
def cache(tmp_path) -> Path:
    return make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")


def train(*args: str):
    return runner.invoke(app, ["train", "vtiqa", *FAST, *args])


def one_error_line(result, *, after_progress: bool = False) -> str:
    """The single `error:` line of a failed command. Errors found before training starts are the
    only output; `after_progress` allows the plain progress lines (stderr) that came before it."""
    assert result.exit_code != 0, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    if after_progress:
        assert all(line.startswith("[") for line in lines[:-1]), result.output
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_train_writes_the_run_folder_and_reports(cache, tmp_path):
    out = tmp_path / "run"
    result = train("--data", "mini", "--epochs", "2", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["selected_on"] == "val" and "validation" in report["selection"]
    row = report["splits"][0]
    assert row["split"] == "random_0" and row["n"] == 8
    for key in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse"):
        assert key in row and key in report["median"]
    # Whether plcc_logistic is a fitted value or the raw PLCC standing in for a failed fit is recorded.
    assert row["logistic_fit"] in ("ok", "fallback")
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))["splits"][0]
    assert saved["logistic_fit"] == row["logistic_fit"]
    for name in ("config.toml", "config.json", "run.json", "results.json"):
        assert (out / name).is_file(), name
    split = out / "split-random_0"
    for name in ("log.jsonl", "best.safetensors", "last.pt", "result.json", "test_predictions.csv"):
        assert (split / name).is_file(), name
    lines = [json.loads(x) for x in (split / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {x["part"] for x in lines} == {"val", "test"} and len(lines) == 4
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["status"] == "complete"
    # The resolved config is valid TOML that --config accepts.
    again = train("--data", "mini", "--config", str(out / "config.toml"), "--epochs", "1", "--out", str(tmp_path / "b"))
    assert again.exit_code == 0, again.output


def test_select_on_test_is_labelled_everywhere(cache, tmp_path):
    out = tmp_path / "run"
    idle = one_error_line(train("--data", str(cache), "--epochs", "1", "--select-on", "test", "--out", str(out)))
    assert "--val-fraction has no effect with --select-on test" in idle and not out.exists()  # FAST holds one
    selecting_on_test = ["train", "vtiqa", *without(FAST, "--val-fraction"), "--select-on", "test"]
    result = runner.invoke(app, [*selecting_on_test, "--data", str(cache), "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "selected on the test part (paper habit; optimistic)" in " ".join(result.stdout.split())
    log = [json.loads(x) for x in (out / "split-random_0" / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert all(x["selected_on"] == "test" for x in log) and {x["part"] for x in log} == {"test"}
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["selected_on"] == "test"
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["selection"].startswith("test part")


def test_split_all_reports_the_median(cache, tmp_path):
    result = train("--data", "mini", "--split", "all", "--epochs", "1", "--out", str(tmp_path / "r"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["split"] for r in report["splits"]] == ["random_0", "random_1"]
    assert report["median"]["splits"] == 2


def test_an_unmeasured_first_evaluation_does_not_block_later_selection(cache, tmp_path, monkeypatch):
    """Epoch 0's validation gives no finite metric (constant predictions early in training): a later
    epoch with a finite one must still be kept; a NaN best used to make every later comparison false."""
    constant_predictions_on_call(monkeypatch, 1)  # epoch 0's validation
    args = ("--val-fraction", "0.25")  # 6 validation images: a correlation needs 3
    result = train("--data", "mini", "--epochs", "3", *args, "--out", str(tmp_path / "r"), "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["splits"][0]
    assert row["best_epoch"] >= 1, row


def test_an_out_that_is_a_file_is_one_line(cache, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("", encoding="utf-8")
    assert one_error_line(train("--data", "mini", "--out", str(blocker))) == (
        f"error: --out: {blocker} is a file; expected a folder"
    )
    assert blocker.read_text(encoding="utf-8") == ""


@pytest.mark.parametrize(
    ("method", "args", "said"),
    [
        ("vtiqa", ["--min-lr", "0.005"], "lr_phases gives 0.001 from epoch 11, below min_lr 0.005, where training"),
        ("vtiqa", ["--lr", "0.01", "--min-lr", "0.02"], "lr 0.01 is below min_lr 0.02, where training stops"),
        ("ieit", ["--stage", "2", "--min-lr", "0.005"], "stage 2's lr_phases gives 0.001 from epoch 0, below"),
        ("aliqa", ["--min-lr", "0.005"], "lr_phases gives 0.001 from epoch 0, below min_lr 0.005"),
        ("aliqa", ["--min-lr", "0.002", "--lr-phases", "0:0.01"], "ft_lr_phases 0.001 is below min_lr 0.002"),
        ("vipnet-dpm", ["--min-lr", "1"], "min_lr (1) is above lr (0.05); it is the cosine's lowest value"),
    ],
)
def test_a_min_lr_above_a_learning_rate_is_refused_before_training(cache, method, args, said):
    """`--min-lr` above a phase's learning rate stopped training as that phase began (VT-IQA: after the
    first epoch), and the model of those epochs was kept as the run's result, exit 0. VIPNet's DPM cosine
    climbed from lr up to min_lr."""
    result = runner.invoke(app, ["train", method, "--tiny", "--device", "cpu", "--data", "mini", *args])
    line = one_error_line(result)
    assert said in line and result.exit_code == 2 and not list(runs_dir().glob("**/run.json")), line


def test_the_fine_tune_phases_count_against_min_lr_only_where_that_step_runs():
    from iqa_cli.train.recipes import get_recipe
    from iqa_cli.train.trainer import resolve_config

    slow = {"min_lr": 0.002, "lr_phases": ((0, 0.01),)}
    with pytest.raises(ConfigError, match="ft_lr_phases 0.001 is below min_lr 0.002"):
        resolve_config(get_recipe("aliqa"), tiny=True, config_file=None, overrides=slow)
    config = resolve_config(get_recipe("aliqa"), tiny=True, config_file=None, overrides={**slow, "fine_tune": False})
    assert config.params.min_lr == 0.002


def test_a_test_part_too_small_to_correlate_is_refused_before_training(tmp_path):
    """A split testing 2 images would report SRCC +-1 whatever the model: refused before any split trains."""
    make_cache("small", tmp_path / "small", data_dir() / "small.h5", n=8, splits=2)  # 6 train, 2 test
    result = train("--data", "small", "--split", "all", "--out", str(tmp_path / "r"))
    line = one_error_line(result)
    assert "split 'random_0': its test part holds 2 image(s), and a correlation needs at least 3" in line
    assert result.exit_code == 65 and not (tmp_path / "r" / "split-random_0").exists()


def test_a_default_name_another_job_claimed_is_passed_over_and_a_refusal_leaves_none(cache, tmp_path, monkeypatch):
    """Jobs of an array start in one second: the second found the first's folder (claimed, no run.json
    yet) and failed; it now takes `-2`. A run refused before training leaves no claimed folder."""
    from iqa_cli.train import runs

    monkeypatch.setattr(runs, "default_run_name", lambda method, dataset: "vtiqa-mini-20261205-070802")
    (runs_dir() / "vtiqa-mini-20261205-070802").mkdir(parents=True)  # another job's claim
    result = train("--data", "mini", "--epochs", "1", "--json")
    assert result.exit_code == 0, result.output
    assert (runs_dir() / "vtiqa-mini-20261205-070802-2" / "run.json").is_file()
    refused = train("--data", "mini", "--epochs", "1", "--val-fraction", "0.01")
    assert refused.exit_code != 0 and "validation part" in refused.output, refused.output
    assert sorted(p.name for p in runs_dir().iterdir() if not p.name.startswith(".")) == [
        "vtiqa-mini-20261205-070802",
        "vtiqa-mini-20261205-070802-2",
    ]


def test_a_split_left_unmeasured_makes_the_run_an_error(cache, tmp_path, monkeypatch):
    """Split random_1 predicts a constant (no finite SRCC): the run completes and keeps its files, but a
    median of random_0 alone would stand for both splits, so the command fails naming the split."""
    from iqa_cli.train.recipes.vtiqa import VTIQARecipe

    current: list[str] = []
    real_init, real_metrics = VTIQARecipe.initialize, VTIQARecipe.metrics

    def initialize(self, model, params, **kwargs):
        current.append(kwargs["split"])
        return real_init(self, model, params, **kwargs)

    def metrics(self, pred, labels, params):
        constant = current and current[-1] == "random_1"
        return real_metrics(self, np.full_like(pred, 3.0) if constant else pred, labels, params)

    monkeypatch.setattr(VTIQARecipe, "initialize", initialize)
    monkeypatch.setattr(VTIQARecipe, "metrics", metrics)
    result = train("--data", "mini", "--split", "all", "--epochs", "1", "--out", str(tmp_path / "r"), "--json")
    line = one_error_line(result, after_progress=True)
    assert "1 of 2 splits gave no finite srcc (random_1" in line and "figures are in results.json" in line
    assert result.exit_code == 65 and result.stdout == ""  # no report passes for a result

    # The run folder's files are strict JSON: the unmeasured metric is null, not NaN (which jq & co. reject).
    def strict(text: str):
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in a JSON file"))

    run = tmp_path / "r"
    saved = strict((run / "results.json").read_text(encoding="utf-8"))
    assert saved["splits"][1]["srcc"] is None and saved["median"]["srcc"] is not None
    strict((run / "run.json").read_text(encoding="utf-8"))
    for line in (run / "split-random_1" / "log.jsonl").read_text(encoding="utf-8").splitlines():
        strict(line)
    # `iqa runs list` showed it "complete" with random_0's SRCC standing for the run.
    from iqa_cli.train.runs import read_run, run_summary

    row = run_summary(run, read_run(run))
    assert row["status"] == "no result" and row["srcc"] is None and "random_1" in row["problem"]
    shown = runner.invoke(app, ["runs", "show", str(run)])
    assert "no result" in shown.stdout and not any(line.startswith("median ") for line in shown.stdout.splitlines())


def test_authors_split_protocols_train_and_evaluate(cache, tmp_path):
    from iqa_cli.data.authors_splits import protocol_split
    from iqa_cli.data.cache import open_cache

    out = tmp_path / "run"
    result = train("--data", "mini", "--split", "vtiqa_chain_2", "--epochs", "1", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["splits"][0]
    # 32 images: the authors' 80/20 (25/7), although the cache's own random splits are 75/25.
    expected = protocol_split("vtiqa_chain_2", 32)
    assert expected["test"].size == 7
    with open_cache(cache) as opened:
        assert all((opened.split("vtiqa_chain_2")[k] == expected[k]).all() for k in ("train", "test"))
    assert row["split"] == "vtiqa_chain_2" and row["n"] == expected["test"].size
    weights = out / "split-vtiqa_chain_2" / "best.safetensors"
    evaluated = runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--weights", str(weights), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    evaluated_row = json.loads(evaluated.stdout)["results"][0]
    assert evaluated_row["split"] == "vtiqa_chain_2" and evaluated_row["srcc"] == pytest.approx(row["srcc"], abs=1e-12)
    assert "vtiqa_chain_K" in one_error_line(train("--data", "mini", "--split", "chain_2"))


def test_gpu_cache_path_trains_the_same_as_the_host_path(cache, tmp_path):
    losses = {}
    for mode in ("on", "off"):  # "on" on the CPU: views kept where the model runs, gathered there
        out = tmp_path / mode
        result = train("--data", "mini", "--epochs", "2", "--gpu-cache", mode, "--out", str(out))
        assert result.exit_code == 0, result.output
        log = [json.loads(x) for x in (out / "split-random_0" / "log.jsonl").read_text(encoding="utf-8").splitlines()]
        losses[mode] = [x["loss"] for x in log if "loss" in x]
    assert losses["on"] == losses["off"] and len(losses["on"]) >= 2
    assert "--gpu-cache must be one of" in one_error_line(train("--data", "mini", "--gpu-cache", "yes"))


def test_toml_config_and_flag_precedence(cache, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('epochs = 1\nbatch_size = 4\nlr_phases = [[0, 0.002]]\nselect_on = "test"\n', encoding="utf-8")
    out = tmp_path / "r"
    assert "--val-fraction has no effect" in one_error_line(train("--data", "mini", "--config", str(config)))
    args = ["train", "vtiqa", *without(FAST, "--val-fraction"), "--data", "mini", "--config", str(config)]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    resolved = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert resolved["params"]["epochs"] == 1 and resolved["params"]["batch_size"] == 8  # the flag wins
    assert resolved["engine"]["select_on"] == "test"
    config.write_text("epochs = 1\nlearning_rat = 0.1\n", encoding="utf-8")
    assert f"{config}: unknown option(s) learning_rat" in one_error_line(
        train("--data", "mini", "--config", str(config))
    )
    # a bad value in the file names the file as well as the key (it read as if the command line were wrong)
    for text, says in [("seed = true", "invalid value for seed"), ('amp = "bf17"', "amp must be one of"),
                       ("lr = -1", "--lr: must be greater than 0")]:  # fmt: skip
        config.write_text(text + "\n", encoding="utf-8")
        assert one_error_line(train("--data", "mini", "--config", str(config))).startswith(f"error: {config}: {says}")
    config.write_text(
        'method = "ieit"\nepochs = 1\n', encoding="utf-8"
    )  # another method's config.toml was taken silently
    line = one_error_line(train("--data", "mini", "--config", str(config)))
    assert f"{config}: method = 'ieit', but this trains 'vtiqa'" in line
    both = one_error_line(train("--data", "mini", "--lr", "0.1", "--lr-phases", "0:0.5"))  # --lr won silently
    assert both == "error: --lr and --lr-phases both set the learning rate; give one"
    config.write_text("lr_phases = [[0, 0.5]]\n", encoding="utf-8")
    assert train("--data", "mini", "--config", str(config), "--lr", "0.1", "--epochs", "1").exit_code == 0  # flag wins
    config.write_text(
        "lr = 0.1\nlr_phases = [[0, 0.5]]\n", encoding="utf-8"
    )  # as a run's resolved config.toml holds them
    assert train("--data", "mini", "--config", str(config), "--epochs", "1").exit_code == 0


def test_a_config_file_s_tiny_is_read_as_every_yes_no_option(cache, tmp_path):
    """`tiny = "false"` in a TOML file was read with Python's bool() of the text, true: the CPU-test-sized
    network trained (and was reported) under the method's name."""
    config = tmp_path / "c.toml"
    for text, tiny in [('"false"', False), ('"no"', False), ("0", False), ('"true"', True), ("false", False)]:
        config.write_text(f"tiny = {text}\n", encoding="utf-8")
        shown = runner.invoke(app, ["train", "vtiqa", "--data", "mini", "--config", str(config), "--print-config"])
        assert shown.exit_code == 0, shown.output
        assert f"tiny = {str(tiny).lower()}" in shown.output, text
    config.write_text('tiny = "maybe"\n', encoding="utf-8")
    line = one_error_line(train("--data", "mini", "--config", str(config)))
    assert line == f"error: {config}: invalid value for tiny: 'maybe' (expected bool)"


def test_a_config_file_saved_by_a_windows_editor_is_read_or_named(cache, tmp_path):
    """A UTF-8 byte-order mark (Notepad's "UTF-8 with BOM") made the file "not valid TOML (Invalid
    statement (at line 1, column 1))"; UTF-16 ("Unicode") was a codec error about byte 0xff."""
    config = tmp_path / "c.toml"
    config.write_bytes(codecs.BOM_UTF8 + b"epochs = 3\n")
    shown = runner.invoke(app, ["train", "vtiqa", "--data", "mini", "--config", str(config), "--print-config"])
    assert shown.exit_code == 0, shown.output
    assert "epochs = 3" in shown.output
    config.write_text("epochs = 3\n", encoding="utf-16")
    line = one_error_line(train("--data", "mini", "--config", str(config)))
    assert line == f"error: {config}: is UTF-16 text (Windows' Unicode): TOML files are UTF-8, save it as UTF-8"


def test_bad_inputs_give_one_line(cache, tmp_path):
    missing = one_error_line(train("--data", "nothere"))
    assert "no prepared cache named 'nothere'" in missing
    assert "`iqa prepare custom --name nothere --root DIR --csv LABELS`" in missing  # no parser has that name
    empty = data_dir() / "empty.h5"
    empty.write_bytes(b"")
    assert "empty" in one_error_line(train("--data", "empty"))
    line = one_error_line(train("--data", "mini", "--split", "7"))
    assert "split '7' does not exist" in line and "random_0" in line
    assert "evaluation-only" in one_error_line(train("--data", "mini", "--variant", "original"))
    assert "must be one of" in one_error_line(train("--data", "mini", "--select-on", "train"))


def test_nan_loss_stops_with_epoch_and_step(cache, tmp_path):
    out = tmp_path / "r"
    result = train("--data", "mini", "--epochs", "3", "--optimizer", "sgd", "--lr", "1e30", "--out", str(out))
    line = one_error_line(result, after_progress=True)
    assert "diverged" in line and "epoch 0 step" in line
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["status"] == "diverged"


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_state(path)["state_dict"]


@pytest.mark.parametrize(("signal_name", "code"), [("SIGTERM", 143), ("SIGINT", 130)])
def test_sigterm_mid_epoch_then_resume_gives_the_same_weights(cache, tmp_path, signal_name, code):
    """A preemption (SIGTERM), or a first Ctrl-C, finishes the step, saves it and says how to resume."""
    args = ["--data", "mini", "--epochs", "2", "--batch-size", "4"]  # 19 training images: 5 steps per epoch
    whole = tmp_path / "whole"
    assert train(*args, "--out", str(whole)).exit_code == 0
    cut = tmp_path / "cut"
    env = {**os.environ, "IQA_DEBUG_SIGNAL_AT_STEP": f"7:{signal_name}"}  # the process signals itself after step 7
    command = [sys.executable, "-m", "iqa_cli", "train", "vtiqa", *FAST, *args, "--out", str(cut)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    assert f"{signal_name} at epoch 1 step 7" in done.stderr and "--resume" in done.stderr
    saved = load_state(cut / "split-random_0" / "last.pt")["position"]
    assert (saved["epoch"], saved["batch"]) == (1, 2)  # mid-epoch (5 steps per epoch)
    assert json.loads((cut / "run.json").read_text(encoding="utf-8"))["status"] == "interrupted"
    resumed = runner.invoke(app, ["train", "vtiqa", "--resume", "--out", str(cut)])
    assert resumed.exit_code == 0, resumed.output
    a, b = _weights(whole / "split-random_0" / "last.pt"), _weights(cut / "split-random_0" / "last.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    results = [json.loads((p / "results.json").read_text(encoding="utf-8"))["splits"][0] for p in (whole, cut)]
    assert results[0]["srcc"] == results[1]["srcc"] and results[0]["plcc"] == results[1]["plcc"]
    changed = runner.invoke(app, ["train", "vtiqa", "--resume", "--out", str(cut), "--lr", "1"])
    assert "differ" in one_error_line(changed)


def test_a_sigterm_lost_before_training_stops_the_run_with_a_resumable_state(cache, tmp_path, monkeypatch):
    """A SIGTERM whose exception Python discarded (a garbage-collection callback) before training began:
    the run trained to the end and exited 0. Lost before the run's record is written, nothing is written
    and the exit is 143; lost after it, the run stops before its first split begins, resumable, exit 143."""
    import signal
    import time

    from iqa_cli.train import trainer

    def losing_a_sigterm(function):
        def wrapped(*args, **kwargs):
            result = function(*args, **kwargs)
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the CLI's handler runs here, and raises
            except KeyboardInterrupt:
                pass  # as Python does in a garbage-collection callback
            return result

        return wrapped

    with monkeypatch.context() as patch:
        patch.setattr(trainer, "open_dataset", losing_a_sigterm(trainer.open_dataset))
        early = train("--data", "mini", "--epochs", "2", "--out", str(tmp_path / "early"))
    assert early.exit_code == 143 and "terminated (SIGTERM)" in early.output, early.output
    assert not (tmp_path / "early" / "run.json").exists()
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(trainer, "open_watched", losing_a_sigterm(trainer.open_watched))
        result = train("--data", "mini", "--epochs", "2", "--out", str(out))
    assert result.exit_code == 143, result.output
    assert "stopped by SIGTERM before split random_0 began" in result.output and "--resume" in result.output
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["status"] == "interrupted"
    resumed = runner.invoke(app, ["train", "vtiqa", "--resume", "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output


def test_a_stopped_sweep_exits_with_the_signal_s_code_and_continues_when_run_again(cache, tmp_path):
    """A preempted sweep (or demo) let the training's stop out as an unforeseen error: exit 1 and
    `error: TrainingInterrupted: ... (run iqa --debug ...)`, as if iqa had a bug."""
    sweep = ["--data", "mini", "--epochs", "1", "--sweep", "lr", "--sweep-values", "0.001,0.002"]
    sweep += ["--out", str(tmp_path / "sweep")]
    env = {**os.environ, "IQA_DEBUG_SIGNAL_AT_STEP": "2", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "iqa_cli", "train", "vtiqa", *FAST, *sweep]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 143, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("vtiqa sweep: stopped by SIGTERM at epoch 0 step 2")
    assert line.endswith("continue with the same command")
    assert "TrainingInterrupted" not in done.stderr
    again = train(*sweep)
    assert again.exit_code == 0, again.output


def test_a_run_killed_while_writing_its_log_resumes_and_reports(cache, tmp_path):
    """A process killed while writing a log line left half a JSON record at the end of log.jsonl; the
    resumed run appended its next record to it, and its `--watch` summary, read from the log, failed
    the finished run as an internal JSONDecodeError. A run killed after logging an epoch but before
    saving its last.pt logged that epoch twice, and the watch summary counted (and maximised over) both."""
    make_cache("other", tmp_path / "other", data_dir() / "other.h5", n=20, seed=3)
    out = tmp_path / "watched"
    options = [a for a in FAST if a not in ("--epochs", "1", "--val-fraction", "0.2")]
    run = [*options, "--data", "mini", "--split", "whole_1", "--watch", "other", "--epochs", "2", "--out", str(out)]
    env = {**os.environ, "IQA_DEBUG_SIGNAL_AT_STEP": "6", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "iqa_cli", "train", "vtiqa", *run], env=env, capture_output=True,
                          text=True, timeout=180)  # fmt: skip
    assert done.returncode == 143, done.stderr[-2000:]
    log = out / "split-whole_1" / "log.jsonl"
    # Epoch 1 logged by a run killed before its last.pt was saved (the resume trains epoch 1 again), then
    # the kill's half line.
    logged = json.dumps({"epoch": 1, "split": "whole_1", "part": "watch:other", "srcc": 0.99, "plcc": 0.99})
    log.write_text(
        log.read_text(encoding="utf-8") + logged + "\n" + '{"epoch": 1, "split": "whole_1", "part": "watch:oth',
        encoding="utf-8",
    )
    resumed = runner.invoke(app, ["train", "vtiqa", "--resume", "--out", str(out), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert "epoch 1 was logged but not saved; it trains again" in resumed.stderr
    watched = json.loads(resumed.stdout)["splits"][0]["watch"]["other"]
    assert watched["epochs"] == 2 and watched["last_epoch"] == 1 and watched["max_abs_srcc"] < 0.99
    assert [r["epoch"] for r in read_log(log) if r.get("part") == "watch:other"] == [0, 1]


def test_a_kept_model_saved_after_the_last_resume_state_keeps_its_own_epoch_and_metric(cache, tmp_path):
    """A run killed between saving an epoch's kept model and its last.pt resumed with the kept file's
    weights but last.pt's older best epoch and metric: the report named the kept weights with another
    epoch, and later epochs were compared with the wrong metric (an epoch trained again on a GPU need not
    repeat its numbers). The position now takes the kept file's epoch and metric."""
    import torch

    from iqa_cli.models.checkpoint import read_state_dict, save_checkpoint

    out = tmp_path / "kept"
    options = [a for a in FAST if a not in ("--epochs", "1")]
    run = [*options, "--data", "mini", "--split", "random_0", "--epochs", "3", "--out", str(out)]
    env = {**os.environ, "IQA_DEBUG_SIGNAL_AT_STEP": "4", "OMP_NUM_THREADS": "1"}  # 3 steps an epoch: in epoch 1
    done = subprocess.run([sys.executable, "-m", "iqa_cli", "train", "vtiqa", *run], env=env, capture_output=True,
                          text=True, timeout=180)  # fmt: skip
    assert done.returncode == 143, done.stderr[-2000:]
    split = out / "split-random_0"
    assert load_state(split / "last.pt")["position"]["epoch"] == 1
    state, meta = read_state_dict(split / "best.safetensors")  # as epoch 1 kept it, before the kill
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in state.items()}
    save_checkpoint(state, split / "best.safetensors", {**meta, "epoch": "1", "metric_value": "0.999"})
    resumed = runner.invoke(app, ["train", "vtiqa", "--resume", "--out", str(out), "--json"])
    assert resumed.exit_code == 0, resumed.output
    row = json.loads(resumed.stdout)["splits"][0]
    assert row["best_epoch"] == 1  # no later epoch beat the kept model's 0.999
    kept, kept_meta = read_state_dict(split / "best.safetensors")
    assert kept_meta["epoch"] == "1" and all(torch.equal(kept[k], state[k]) for k in state)


def test_a_run_resumed_on_another_number_of_ranks_says_its_figures_change(cache, tmp_path):
    """A job preempted on 2 GPUs and requeued on 1 went on without a word, though every batch then gets
    other per-rank seeds: the run is no longer the one its record's world size describes."""
    out = tmp_path / "moved"
    run = [*FAST, "--data", "mini", "--split", "random_0", "--out", str(out)]
    env = {**os.environ, "IQA_DEBUG_SIGNAL_AT_STEP": "2", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "iqa_cli", "train", "vtiqa", *run], env=env, capture_output=True,
                          text=True, timeout=180)  # fmt: skip
    assert done.returncode == 143, done.stderr[-2000:]
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["world_size"] == 1
    record["world_size"] = 2  # as a torchrun job on 2 ranks records it
    (out / "run.json").write_text(json.dumps(record), encoding="utf-8")
    resumed = runner.invoke(app, ["train", "vtiqa", "--resume", "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    said = "this run started on 2 rank(s) and goes on with 1: each batch is shared out otherwise"
    assert said in " ".join(resumed.stderr.split())


def test_a_sweep_value_written_twice_in_two_ways_is_refused(cache, tmp_path):
    """`--sweep-values 0.1,1e-1` planned two runs of one setting (the same seed: the same run twice), shown
    as two rows of the sweep's table; only the same text was refused."""
    sweep = ["--data", "mini", "--epochs", "1", "--sweep", "lr", "--out", str(tmp_path / "sweep"), "--print-config"]
    line = one_error_line(train(*sweep, "--sweep-values", "0.1,1e-1"))
    assert line == "error: --sweep-values: '0.1' and '1e-1' are the same value of lr"
    assert train(*sweep, "--sweep-values", "0.1,0.2").exit_code == 0


def test_one_dataset_watched_twice_is_refused_before_any_views(cache, tmp_path):
    """`--watch other,PATH/other.h5` passed the check of names given twice: both were scored every epoch
    under one name, so the log held two records an epoch and the summary counted 2 epochs of 1."""
    make_cache("other", tmp_path / "other", data_dir() / "other.h5", n=20, seed=3)
    out = tmp_path / "run"
    watched = f"other,{data_dir() / 'other.h5'}"
    line = one_error_line(train("--data", "mini", "--split", "random_0", "--watch", watched, "--out", str(out)))
    assert f"--watch: 'other' and '{data_dir() / 'other.h5'}' are both dataset 'other'" in line
    assert not out.exists()


def test_print_config_of_a_sweep_shows_every_run_and_checks_every_value(cache, tmp_path):
    """`--print-config --sweep lr --sweep-values 0.1,abc` printed one run's plan, ignoring the sweep and
    its bad value. It now plans each run as the sweep would, and refuses what the sweep would refuse."""
    sweep = ["--data", "mini", "--epochs", "1", "--sweep", "lr", "--out", str(tmp_path / "sweep")]
    bad = train(*sweep, "--sweep-values", "0.1,abc", "--print-config")
    assert bad.exit_code == 2 and "invalid value for --lr: 'abc'" in bad.output
    planned = train(*sweep, "--sweep-values", "0.001,0.002", "--repeats", "2", "--print-config", "--json")
    assert planned.exit_code == 0, planned.output
    runs = json.loads(planned.stdout)["runs"]
    assert [(r["value"], r["repeat"], r["seed"]) for r in runs] == [
        ("0.001", 1, 0), ("0.001", 2, 1), ("0.002", 1, 0), ("0.002", 2, 1)
    ]  # fmt: skip
    assert [r["plan"]["sections"]["vtiqa protocol"]["lr"] for r in runs] == [0.001, 0.001, 0.002, 0.002]
    assert [r["plan"]["splits"] for r in runs] == [["random_0"]] * 4 and not (tmp_path / "sweep").exists()
    text = train(*sweep, "--sweep-values", "0.001,0.002", "--print-config")
    assert "sweep of lr, 2 run(s)" in text.stdout and "lr=0.002 repeat 1 seed 0" in text.stdout
    assert train(*sweep, "--sweep-values", "0.001").exit_code == 0  # a kept run; then asked with other epochs:
    again = train(
        *sweep[:-2], "--epochs", "2", "--out", str(tmp_path / "sweep"), "--sweep-values", "0.001", "--print-config"
    )
    assert again.exit_code == 2 and "this sweep's run was made with other options" in again.output


def test_a_sweep_s_repeats_start_from_the_config_file_s_seed(cache, tmp_path):
    """A --config file's `seed = 5` was ignored by --repeats: the runs trained at seeds 0, 1 (only --seed was
    read), while the file said 5."""
    config = tmp_path / "config.toml"
    config.write_text("seed = 5\n", encoding="utf-8")
    sweep = ["--data", "mini", "--epochs", "1", "--config", str(config), "--repeats", "2", "--print-config", "--json"]
    planned = train(*sweep, "--out", str(tmp_path / "sweep"))
    assert planned.exit_code == 0, planned.output
    assert [r["seed"] for r in json.loads(planned.stdout)["runs"]] == [5, 6]
    given = train(*sweep, "--seed", "9", "--out", str(tmp_path / "sweep"))  # the command line still wins
    assert [r["seed"] for r in json.loads(given.stdout)["runs"]] == [9, 10]


def test_a_sweep_run_again_on_a_moved_copy_of_its_cache_reuses_its_runs(cache, tmp_path):
    """A sweep folder whose cache moved was refused as "made with other options: --data" when run again."""
    out = tmp_path / "sweep"
    sweep = ["--epochs", "1", "--sweep", "lr", "--sweep-values", "0.001,0.002", "--out", str(out), "--json"]
    first = train("--data", "mini", *sweep)
    assert first.exit_code == 0, first.output
    moved = tmp_path / "scratch" / "mini.h5"
    moved.parent.mkdir()
    shutil.move(cache, moved)
    again = train("--data", str(moved), *sweep)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["runs"] == json.loads(first.stdout)["runs"]  # read back, not trained again
    other = make_cache("other", tmp_path / "other", tmp_path / "other.h5", seed=1)
    refused = train("--data", str(other), *sweep)
    assert refused.exit_code == 2 and "this sweep's run was made with other options: --data" in refused.output


def _reprepare_with_other_splits(folder: Path, out: Path) -> None:
    """The same images and scores as `make_cache` writes them, split with another seed."""
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.cache_write import CacheOptions
    from iqa_cli.data.datasets.custom import make_spec

    spec = make_spec(out.stem, folder / "scores.csv", root=folder, native_range=(1.0, 5.0))
    build_cache(spec, folder, out, CacheOptions(workers=1, splits=2, split_seed=5, test_fraction=0.25))


def test_a_sweep_run_again_on_the_same_images_split_otherwise_is_refused(cache, tmp_path):
    """Run again on a copy of its images split with another seed (another name, or its cache prepared again),
    a sweep read its finished runs back and printed their figures as the new data's."""
    out = tmp_path / "sweep"
    sweep = ["--epochs", "1", "--split", "1", "--sweep", "lr", "--sweep-values", "0.001,0.002", "--out", str(out)]
    assert train("--data", "mini", *sweep).exit_code == 0
    _reprepare_with_other_splits(tmp_path / "mini", data_dir() / "reseeded.h5")
    line = one_error_line(train("--data", "reseeded", *sweep))
    assert "this sweep's run was made with other options: its cache split the images otherwise: split random_1" in line
    _reprepare_with_other_splits(tmp_path / "mini", cache)  # the sweep's own cache, prepared again
    assert "its cache split the images otherwise" in one_error_line(train("--data", "mini", *sweep))


def test_a_resumed_run_does_not_train_its_pending_splits_on_another_split_set(cache, tmp_path):
    """Preempted between its splits, a run resumed on its cache prepared again with other splits trained the
    pending split on the new split set (only started splits had their images recorded), and reported it
    beside the one done on the old, exit 0."""
    out = tmp_path / "run"
    assert train("--data", "mini", "--epochs", "1", "--split", "all", "--out", str(out)).exit_code == 0
    record = json.loads(
        (out / "run.json").read_text(encoding="utf-8")
    )  # as a preemption right after split random_0 leaves it
    record["splits"]["random_1"] = {"status": "pending"}
    record["status"] = "interrupted"
    (out / "run.json").write_text(json.dumps(record), encoding="utf-8")
    shutil.rmtree(out / "split-random_1")
    _reprepare_with_other_splits(tmp_path / "mini", cache)
    line = one_error_line(runner.invoke(app, ["train", "vtiqa", "--resume", "--out", str(out)]), after_progress=True)
    assert "no longer splits its images as when this run started: split random_0 holds other images" in line


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun not installed",
)
def test_a_stop_under_two_gloo_ranks_is_said_once(cache, tmp_path):
    """Both ranks of a preempted torchrun job stop at the same step; each printed the same "stopped by"
    line, so a SLURM log held it twice."""
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "stopped"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "iqa_cli", "train", "vtiqa", *FAST]
    command += ["--data", "mini", "--epochs", "2", "--val-fraction", "0.25", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IQA_SHM_DIR": str(tmp_path), "IQA_DEBUG_SIGNAL_AT_STEP": "2"}
    env["TMPDIR"] = str(tmp_path)  # torchrun leaves a torchelastic_* folder there
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode != 0 and done.stderr.count("stopped by SIGTERM at epoch") == 1, done.stderr[-3000:]
    assert "--resume" in done.stderr and (out / "split-random_0" / "last.pt").is_file()


def test_a_sweep_under_two_gloo_ranks_reports_once(cache, tmp_path):
    """Rank 1 of a torchrun sweep built a table of no rows, wrote it over rank 0's and failed the job:
    "no run gave a finite srcc"; with --json both ranks would have printed."""
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "sweep"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "iqa_cli", "train", "vtiqa", *FAST]
    command += ["--data", "mini", "--epochs", "1", "--val-fraction", "0.25", "--out", str(out), "--json"]
    command += ["--sweep", "lr", "--sweep-values", "0.002,0.003,0.004"]  # runs 2 and 3 once hung (new groups)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IQA_SHM_DIR": str(tmp_path), "TMPDIR": str(tmp_path)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    causes = [line for line in done.stderr.splitlines() if "error" in line.lower() and "errors.html" not in line]
    assert done.returncode == 0, "\n".join(causes[-20:]) or done.stderr[-2000:]
    table = json.loads(done.stdout)  # one document: rank 0's
    assert [row["value"] for row in table["runs"]] == ["0.002", "0.003", "0.004"]
    assert all(isinstance(row["srcc"], float) for row in table["runs"])
    assert json.loads((out / "sweep.json").read_text(encoding="utf-8"))["runs"] == table["runs"]


def test_ddp_two_gloo_ranks_see_different_data_and_agree(cache, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "ddp"
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "iqa_cli", "train", "vtiqa", *FAST]
    command += ["--data", "mini", "--epochs", "1", "--val-fraction", "0.25", "--out", str(out), "--json"]  # 18 train
    shm = tmp_path / "shm"
    shm.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IQA_SHM_DIR": str(shm), "TMPDIR": str(tmp_path)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    causes = [line for line in done.stderr.splitlines() if "error" in line.lower() and "errors.html" not in line]
    assert done.returncode == 0, "\n".join(causes[-20:]) or done.stderr[-2000:]
    report = json.loads(done.stdout)  # only rank 0 prints
    ranks = report["splits"][0]["ranks"]
    assert ranks["world_size"] == 2
    first = ranks["first_epoch"]
    assert first["per_rank"] == [9, 9] and first["shared"] == 0 and first["union"] == 18
    assert first["digests"][0] != first["digests"][1]
    assert len(set(ranks["weights_digest"])) == 1
    # One copy of the preloaded views for the node: rank 0 computed them, rank 1 mapped its files,
    # which are gone once both had them.
    assert ranks["views"] == ["computed", "mapped"] and list(shm.iterdir()) == []
    assert "preloaded in shared memory, one copy for the 2 ranks of this node" in done.stderr


def test_shared_memory_that_refuses_the_views_leaves_each_rank_its_own_copy(cache, tmp_path):
    """The leader sized the shared view files with `ftruncate` after a free-space check and wrote them page
    by page: a /dev/shm that another job filled meanwhile killed it with SIGBUS mid-views. It now reserves
    the space before the ranks agree to share, and a refusal leaves each rank its own copy. A file size
    limit under the views' size (1 MiB; the larger view file takes 1.6 MiB, a checkpoint 0.7 MiB) stands in for the full
    tmpfs: before, the job failed."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (2**20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "iqa_cli", "train", "vtiqa", *FAST]
    command += ["--data", "mini", "--epochs", "1", "--val-fraction", "0.25", "--out", str(tmp_path / "ddp"), "--json"]
    command += ["--optimizer", "sgd"]  # no optimiser state: a last.pt of 0.7 MiB, under the limit
    shm = tmp_path / "shm"
    shm.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IQA_SHM_DIR": str(shm), "TMPDIR": str(tmp_path)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180, preexec_fn=limit)
    causes = [line for line in done.stderr.splitlines() if "error" in line.lower() and "errors.html" not in line]
    assert done.returncode == 0, "\n".join(causes[-20:]) or done.stderr[-2000:]
    assert json.loads(done.stdout)["splits"][0]["ranks"]["views"] == ["computed", "computed"]
    assert f"shared memory in {shm} refused the views (File too large): each rank keeps its own copy" in done.stderr
    assert list(shm.iterdir()) == []


def test_views_upscaled_from_a_cache_prepared_smaller_are_said(tmp_path, _isolated_home):
    """`iqa prepare koniq --size 512x384` (a README example) then `iqa train vtiqa`: the 768 px view was
    upscaled from the half-size images without a word, where VT-IQA's authors resize the originals."""
    from tests.train.caches import write_folder

    folder = write_folder(tmp_path / "photos", n=24)
    made = runner.invoke(app, ["prepare", "custom", "--root", str(folder), "--name", "half", "--range", "1,5",
                               "--size", "40x30", "--splits", "1", "-j", "1"])  # fmt: skip
    assert made.exit_code == 0, made.output
    said = "half is stored at size 40x30 (its default: none), about 40x30 px, smaller than the 128 px view vtiqa"
    trained = train("--data", "half", "--epochs", "1", "--name", "half-run")
    assert trained.exit_code == 0, trained.output
    assert said in " ".join(trained.stderr.split())
    evaluated = runner.invoke(app, ["eval", "vtiqa", "--weights", "half-run", "--data", "half", "--device", "cpu"])
    assert evaluated.exit_code == 0, evaluated.output
    assert said in " ".join(evaluated.stderr.split())
    # The same images kept at their own size (the default) are what the protocol resizes: nothing to say.
    kept = runner.invoke(app, ["prepare", "custom", "--root", str(folder), "--name", "whole", "--range", "1,5",
                               "--splits", "1", "-j", "1"])  # fmt: skip
    assert kept.exit_code == 0, kept.output
    trained = train("--data", "whole", "--epochs", "1", "--name", "whole-run")
    assert trained.exit_code == 0 and "upscaled" not in trained.stderr, trained.output


def _launcher(tmp_path: Path, *, shell: str = "", on_rank_1: str = "") -> Path:
    """A program for `torchrun --no-python` that runs iqa after the shell lines `shell` (e.g. an environment
    per rank: the nodes of a multi-node job, each with its own files) and, on local rank 1 only, the Python
    lines `on_rank_1` (e.g. a clock or a version of its own)."""
    code = "import os, runpy, sys\n"
    if on_rank_1:
        indented = "".join(f"    {line}\n" for line in on_rank_1.splitlines())
        code += f"if os.environ.get('LOCAL_RANK') == '1':\n{indented}"
    code += "sys.argv = ['iqa', *sys.argv[1:]]\nrunpy.run_module('iqa_cli', run_name='__main__')\n"
    script = tmp_path / "launcher.sh"
    script.write_text(f'#!/bin/sh\n{shell}\nexec {sys.executable} -c "{code}" "$@"\n', encoding="utf-8")
    script.chmod(0o755)
    return script


def _two_ranks(tmp_path: Path, launcher: Path | None, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`iqa ARGS` as a 2-rank gloo torchrun job on this host (through `launcher` where given)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2"]
    command += ["--no-python", str(launcher)] if launcher else ["-m", "iqa_cli"]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "IQA_SHM_DIR": str(tmp_path), "TMPDIR": str(tmp_path), **env}
    return subprocess.run([*command, *args], env=full_env, capture_output=True, text=True, timeout=150)


def _error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


def test_ranks_share_the_node_s_cores_by_iqa_s_policy_not_torchrun_s_one_thread(cache, tmp_path):
    """torchrun gives every rank OMP_NUM_THREADS=1 when its environment has none, and the thread policy took
    that as the user's: 2 CPU ranks on a 64-core node trained on 2 cores. The policy now shares the cores."""
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "iqa_cli", "-v", "train", "vtiqa", *FAST]
    command += ["--data", "mini", "--epochs", "1", "--out", str(tmp_path / "ddp")]
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update({"IQA_SHM_DIR": str(tmp_path), "TMPDIR": str(tmp_path)})
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "usable cores, 2 rank(s) on this node)" in done.stderr, done.stderr[-3000:]


def test_ranks_whose_weights_drift_apart_evaluate_rank_0s_model(cache, tmp_path):
    """DDP averages gradients, not weights: ranks whose optimizer steps round differently (mixed GPU types)
    drift apart, and each rank scored its share of the test part with its own model, so the figures mixed
    two models, exit 0. Here rank 1 nudges a weight after each step; every epoch's end now gives every rank
    rank 0's weights, and says so."""
    drift = (
        "import torch\n"
        "from torch.optim.optimizer import register_optimizer_step_post_hook\n"
        "def nudge(opt, args, kwargs):\n"
        "    with torch.no_grad():\n"
        "        opt.param_groups[0]['params'][0].add_(1e-3)\n"
        "register_optimizer_step_post_hook(nudge)"
    )
    out = tmp_path / "ddp"
    args = ["train", "vtiqa", *FAST, "--data", "mini", "--epochs", "2", "--out", str(out), "--json"]
    done = _two_ranks(tmp_path, _launcher(tmp_path, on_rank_1=drift), *args)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = json.loads(done.stdout)["splits"][0]["ranks"]
    assert len(set(ranks["weights_digest"])) == 1
    warnings = [line for line in done.stderr.splitlines() if "drifted apart" in line]
    assert len(warnings) == 1 and "split random_0 epoch 0:" in warnings[0]


def test_ranks_that_open_other_copies_of_a_dataset_are_refused(cache, tmp_path):
    """A multi-node job whose nodes resolve `--data mini` to their own copies, one of them stale (here: other
    images under the same name), trained every rank on its own copy, and the leader's shared-memory views
    gave rank 1 rank 0's pixels beside its own labels, exit 0. Every rank now compares what it opened."""
    other_home = tmp_path / "node1"
    make_cache("mini", tmp_path / "mini_other", other_home / "data" / "mini.h5", seed=1)
    homes = f'case "$LOCAL_RANK" in 0) export IQA_HOME={data_dir().parent} ;; 1) export IQA_HOME={other_home} ;; esac'
    out = tmp_path / "ddp"
    args = ["train", "vtiqa", *FAST, "--data", "mini", "--epochs", "1", "--out", str(out)]
    done = _two_ranks(tmp_path, _launcher(tmp_path, shell=homes), *args, IQA_RUNS=str(tmp_path / "runs"))
    assert done.returncode != 0
    errors = _error_lines(done)
    assert errors and all("--data: rank 1 (host " in line for line in errors), done.stderr[-3000:]
    assert str(other_home / "data" / "mini.h5") in errors[0] and "images_digest" in errors[0]
    assert "copy it to every node again" in errors[0]
    assert not out.exists()  # refused before the run folder was made


def test_ranks_that_resume_from_other_copies_of_a_run_are_refused(cache, tmp_path):
    """Nodes whose runs folders are their own (`$IQA_RUNS` on local disk): rank 0 resumed at step 4 while
    rank 1, without that `last.pt`, started the split afresh, and the job hung in its first collective.
    The ranks now compare where they resume from, and every rank says why."""
    runs = [tmp_path / "runs0", tmp_path / "runs1"]
    args = ["train", "vtiqa", *FAST, "--data", "mini", "--epochs", "2", "--out", str(runs[0] / "run")]
    stopped = _two_ranks(tmp_path, None, *args, IQA_DEBUG_SIGNAL_AT_STEP="2")
    assert stopped.returncode != 0 and (runs[0] / "run" / "split-random_0" / "last.pt").is_file()
    shutil.copytree(runs[0], runs[1])
    (runs[1] / "run" / "split-random_0" / "last.pt").unlink()  # node 1's copy, taken before the save
    launcher = _launcher(tmp_path, shell=f"export IQA_RUNS={tmp_path}/runs$LOCAL_RANK")
    done = _two_ranks(tmp_path, launcher, "train", "vtiqa", "--resume", "--name", "run")
    assert done.returncode != 0
    errors = _error_lines(done)
    assert len(errors) == 2 and all("--resume: rank 1 (host " in line for line in errors), done.stderr[-3000:]
    assert "(best_saved, resumed_at)" in errors[0] and "$IQA_RUNS" in errors[0]


@pytest.mark.parametrize("node_rank", ["torchrun's", "none"])
def test_two_nodes_on_one_host_each_share_their_own_views_and_leave_nothing(cache, tmp_path, node_rank):
    """Two torchrun nodes whose hosts share a name (containers) and one shared-memory folder: the nodes were
    told apart by host name, so node 1's leader wrote its views into node 0's files and left the files it
    had reserved behind in /dev/shm (memory no process frees). Nodes are now told apart by torchrun's node
    rank: each leader writes its own files, and nothing is left. Without a node rank (a launcher that sets
    none), nodes that cannot be told apart keep a copy per rank, with a warning."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    torchrun = Path(sys.executable).with_name("torchrun")
    shm = tmp_path / "shm"
    shm.mkdir()
    command = [str(torchrun), "--nnodes", "2", "--nproc_per_node", "2", "--rdzv_backend", "c10d"]
    command += ["--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "two-nodes"]
    if node_rank == "none":
        command += ["--no-python", str(_launcher(tmp_path, shell="unset GROUP_RANK")), "train", "vtiqa"]
    else:
        command += ["-m", "iqa_cli", "train", "vtiqa"]
    command += [*FAST, "--data", "mini", "--epochs", "1", "--out", str(tmp_path / "run"), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IQA_SHM_DIR": str(shm), "TMPDIR": str(tmp_path)}
    nodes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    nodes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [node.communicate(timeout=240) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), "\n".join(err[-2000:] for _, err in outputs)
    report = json.loads(next(out for out, _ in outputs if out.strip()))  # global rank 0's node prints
    views = report["splits"][0]["ranks"]["views"]
    if node_rank == "none":
        assert views == ["computed"] * 4
        assert any("nodes cannot be told apart" in err for _, err in outputs)
    else:
        assert views == ["computed", "mapped", "computed", "mapped"]
    assert list(shm.iterdir()) == []


def test_a_time_limit_stops_every_rank_at_the_same_step(cache, tmp_path):
    """Each rank timed `--time-limit` on its own clock, so the ranks crossed it at different steps: the
    first to stop saved and waited while the others went on into the next step's collectives, and the job
    hung until killed. The ranks now agree on the time limit as on a signal. Rank 1's clock runs 4x fast
    here, so it crosses the limit long before rank 0."""
    fast_clock = "import time\nreal, base = time.monotonic, time.monotonic()\n"
    fast_clock += "time.monotonic = lambda: base + (real() - base) * 4.0"
    args = ["train", "vtiqa", *FAST, "--data", "mini", "--epochs", "500", "--out", str(tmp_path / "limited")]
    args += ["--time-limit", "0.1"]  # 6 s: rank 1 is over it after 1.5 s
    done = _two_ranks(tmp_path, _launcher(tmp_path, on_rank_1=fast_clock), *args)
    assert done.stderr.count("exitcode  : 124") == 2, done.stderr[-3000:]  # both ranks stopped by the limit
    # Mostly mid-training; on a machine slow enough that rank 1's clock runs out during the setup, both
    # ranks stop before the split instead: either way together, and said once.
    assert done.stderr.count("stopped by time limit at epoch") + done.stderr.count("stopped by time limit before") == 1


def _clock_that_jumps_each_epoch(monkeypatch, seconds: float) -> None:
    """time.monotonic as the training code reads it, moved on `seconds` by every training epoch."""
    import time

    from iqa_cli.train.engine import Trainer

    real, jumped = time.monotonic, [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: real() + jumped[0])
    train_epoch = Trainer._train_epoch

    def epoch_then_jump(self, epoch):
        reached = train_epoch(self, epoch)
        jumped[0] += seconds
        return reached

    monkeypatch.setattr(Trainer, "_train_epoch", epoch_then_jump)


def test_a_time_limit_covers_every_split_of_the_run(cache, tmp_path, monkeypatch):
    """`--time-limit` was timed from each split's start: a run of 2 splits x 2 epochs of 10 s each, under a
    limit of 30 s, trained both splits (40 s) and finished, so a cluster job sized by the limit ran out of
    its wall time. The limit now counts from the run's start: split random_1 stops after its first epoch."""
    _clock_that_jumps_each_epoch(monkeypatch, 10.0)
    out = tmp_path / "run"
    result = train("--data", "mini", "--split", "all", "--epochs", "2", "--time-limit", "0.5", "--out", str(out))
    assert result.exit_code == 124, result.output
    assert "stopped by time limit at epoch 1 " in result.output
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["splits"]["random_0"]["status"] == "complete"
    assert record["splits"]["random_1"]["status"] == "interrupted"


def test_a_time_limit_that_runs_out_between_splits_stops_before_the_next(cache, tmp_path, monkeypatch):
    """The time limit is checked before a split begins (its views alone can take minutes): the run stops
    there, resumable, and says which split is next."""
    import iqa_cli.train.trainer as trainer

    out = tmp_path / "run"
    with monkeypatch.context() as patched:  # over the limit from the start: split random_0 trains all the same
        patched.setattr(trainer, "over_time_limit", lambda minutes: minutes > 0)
        result = train("--data", "mini", "--split", "all", "--epochs", "1", "--time-limit", "60", "--out", str(out))
    assert result.exit_code == 124, result.output
    assert "stopped by time limit before split random_1 began (the 1 split(s) before it are done)" in result.output
    assert f"continue with `iqa train vtiqa --resume --out {out}`" in result.output
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["status"] == "interrupted" and record["splits"]["random_1"]["status"] == "pending"
    resumed = runner.invoke(app, ["train", "vtiqa", "--resume", "--out", str(out), "--json"])
    assert resumed.exit_code == 0, resumed.output
    assert [row["split"] for row in json.loads(resumed.stdout)["splits"]] == ["random_0", "random_1"]


def test_a_time_limit_covers_every_run_of_a_sweep(cache, tmp_path, monkeypatch):
    """A sweep's runs each got the whole `--time-limit` (two runs of 20 s under a limit of 30 s both
    finished). The limit now covers the sweep: the second run stops after its first epoch, and the same
    command goes on from there."""
    out = tmp_path / "sweep"
    args = ["--data", "mini", "--split", "0", "--epochs", "2", "--out", str(out)]
    args += ["--sweep", "lr", "--sweep-values", "0.002,0.003"]
    with monkeypatch.context() as patched:
        _clock_that_jumps_each_epoch(patched, 10.0)
        result = train(*args, "--time-limit", "0.5")
    assert result.exit_code == 124, result.output
    assert "vtiqa sweep: stopped by time limit at epoch 1 " in result.output
    again = train(*args, "--json")
    assert again.exit_code == 0, again.output
    assert [row["value"] for row in json.loads(again.stdout)["runs"]] == ["0.002", "0.003"]


def test_ranks_that_run_other_versions_of_iqa_are_refused(cache, tmp_path):
    """Nodes that each pulled their own environment (or container image) ran other code on each rank: other
    views, other defaults, one job's numbers from two programs. The ranks now compare the versions that
    decide the numbers before any work."""
    older = "import iqa_cli.version\niqa_cli.version.__version__ = '0.0.1'"
    out = tmp_path / "mixed"
    args = ["train", "vtiqa", *FAST, "--data", "mini", "--epochs", "1", "--out", str(out)]
    done = _two_ranks(tmp_path, _launcher(tmp_path, on_rank_1=older), *args)
    assert done.returncode != 0
    errors = _error_lines(done)
    assert errors and all("the installation: rank 1 (host " in line for line in errors), done.stderr[-3000:]
    assert "(iqa); every rank must run the same iqa and libraries" in errors[0]
    assert not out.exists()


def test_a_job_whose_setup_outlasts_its_time_limit_still_makes_progress(cache, tmp_path):
    """The limit counts from the command's start, so a requeued job whose setup (views, dataset) outlasts it
    would stop before its first step every time and never get further. Each command trains at least one
    step before the limit stops it, and each resume (which keeps the limit) goes on from there."""
    out = tmp_path / "run"
    first = train("--data", "mini", "--split", "all", "--epochs", "2", "--time-limit", "0.00001", "--out", str(out))
    assert first.exit_code == 124 and "stopped by time limit at epoch 0 step 1;" in first.output, first.output
    again = runner.invoke(app, ["train", "vtiqa", "--resume", "--out", str(out)])
    assert again.exit_code == 124 and "stopped by time limit at epoch 0 step 2;" in again.output, again.output
