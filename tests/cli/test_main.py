"""The root command: what every sub-command goes through before its work."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.home import data_dir
from tests.torchrun_parent import started_by_torchrun
from tests.train.caches import make_cache

runner = CliRunner()
FAST = ["--tiny", "--freeze-epochs", "0", "--optimizer", "adamw", "--lr", "0.002", "--batch-size", "8"]
FAST += ["--dropout", "0", "--device", "cpu", "--epochs", "1", "--val-fraction", "0.2"]


@pytest.fixture
def trained(tmp_path) -> None:
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    result = runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "mini", "--name", "one"])
    assert result.exit_code == 0, result.output


def test_a_command_that_does_not_train_runs_once_under_torchrun(trained, monkeypatch):
    """`torchrun --nproc_per_node 2 -m iqa_cli eval ... --json` printed two JSON documents on one stdout
    (each rank evaluated everything): invalid JSON for the script that reads it."""
    alone = runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--json"])
    assert alone.exit_code == 0, alone.output
    job = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0"}
    for name, value in job.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    other = runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--json"])
    assert other.exit_code == 0 and other.stdout == ""  # rank 1 leaves at once
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    first = runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--json"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["results"] == json.loads(alone.stdout)["results"]
    assert "runs as one process: rank 0 of this torchrun job does the work, the other 1 rank(s)" in first.stderr
    assert "WORLD_SIZE" not in os.environ and "LOCAL_WORLD_SIZE" not in os.environ  # a plain process from here


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads a process's environment in /proc")
@pytest.mark.parametrize("users", [False, True])
def test_rank_0_alone_drops_torchrun_s_one_thread_default_but_not_the_user_s(trained, monkeypatch, users):
    """torchrun gives every rank OMP_NUM_THREADS=1 when its own environment has none; rank 0 running a
    command alone kept it and scored on one thread (said: "with every core"). The user's own 1 stays."""
    with started_by_torchrun(monkeypatch, users=users):
        job = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "0", "RANK": "0", "LOCAL_RANK": "0"}
        for name, value in job.items():
            monkeypatch.setenv(name, value)
        done = runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--json"])
    assert done.exit_code == 0, done.output
    assert os.environ.get("OMP_NUM_THREADS") == ("1" if users else None)


def test_each_rank_of_a_torchrun_job_names_itself_in_its_error_line(monkeypatch):
    """Every rank of a torchrun job prints its own error (a node may lack the cache the others have), so a
    SLURM log held the same line once per rank with nothing to tell them apart."""
    alone = runner.invoke(app, ["train", "vtiqa", *FAST])  # refused before the job's process group forms
    assert alone.exit_code == 2 and alone.stderr.startswith("error: --data is required"), alone.output
    for name, value in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    ranked = runner.invoke(app, ["train", "vtiqa", *FAST])
    assert ranked.exit_code == 2
    assert ranked.stderr.strip().splitlines() == [alone.stderr.strip().replace("error: ", "error: [rank 1] ", 1)]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["prepare", "livew", "--root", "", "--out", "x.h5"], "error: --root: empty value (an unset shell variable?)"),
        (["prepare", "livew", "--root=", "--out", "x.h5"], "error: --root: empty value"),
        (["predict", "vtiqa", "", "--weights", "w"], "error: an empty argument after 'vtiqa'"),
        (["predict", "vtiqa", "--json", "", "--weights", "w"], "error: an empty argument after '--json'"),
        (["eval", "vtiqa", "--data", "mini", "--cross", ""], "error: --cross: empty value"),
    ],
)
def test_an_empty_argument_is_refused_before_the_work(tmp_path, monkeypatch, args, said):
    """`iqa prepare livew --root $DATA` with DATA unset read "" as the current folder and prepared whatever
    dataset it found under the job's working directory, exit 0."""
    from tests.data.fixtures import make_livew

    make_livew(tmp_path)  # a dataset right here, where "" would have led
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(said), result.output
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["eval", "vtiqa", "--data", "mini", "--cross", "mini,"], "error: --cross: an empty entry in 'mini,'"),
        (["eval", "vtiqa", "--matrix", "--data", "mini,,mini"], "error: --data: an empty entry"),
        (["eval", "vtiqa", "--data", "mini", "--weights", "a,,b"], "error: --weights: an empty entry"),
        (["train", "vtiqa", *FAST, "--data", "mini", "--watch", "mini,"], "error: --watch: an empty entry"),
        (
            ["train", "vtiqa", *FAST, "--data", "mini", "--sweep", "lr", "--sweep-values", "0.1,,0.2"],
            "error: --sweep-values: an empty entry",
        ),
        (
            ["train", "vtiqa", *FAST, "--data", "mini", "--lr-phases", "0:0.01,,11:0.001"],
            "error: invalid value for --lr-phases: '0:0.01,,11:0.001'",
        ),
    ],
)
def test_an_empty_entry_in_a_list_is_refused_before_the_work(trained, args, said):
    """`--cross "$A,$B"` with B unset (and `a,,b` anywhere else) dropped the empty entry and ran on fewer
    datasets, runs or values than the command named, exit 0."""
    from iqa_cli.home import runs_dir

    before = sorted(runs_dir().iterdir())
    result = runner.invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(said), result.output
    assert sorted(runs_dir().iterdir()) == before


def test_under_a_virtual_memory_limit_commands_say_so_and_start_what_hung_first(tmp_path, monkeypatch):
    """Under `ulimit -v` (login nodes), scipy's BLAS, first loaded for the first epoch's metrics, waited for
    memory forever at 100 % CPU; cuDNN, loaded on a CPU run only to record its version, aborted the
    process; other libraries fail with errors of their own. Training now loads scipy before any work and
    leaves cuDNN alone on the CPU, and a command that builds networks names the limit."""
    import torch

    from iqa_cli import memory
    from iqa_cli.train import trainer

    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    monkeypatch.setattr(memory, "address_space_limit", lambda: int(3.5 * 2**30))
    loaded: list[str] = []

    def load_first() -> None:  # what train() does before it opens the cache or makes a run folder
        loaded.append("scipy")
        raise RuntimeError("could not create a primitive")

    monkeypatch.setattr(trainer, "load_metric_libraries", load_first)
    result = runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "mini", "--out", str(tmp_path / "run")])
    assert loaded == ["scipy"] and not (tmp_path / "run").exists()
    assert "warning: virtual memory is limited to 3.5 GiB (`ulimit -v`)" in result.output
    assert result.exit_code == 1 and (
        "error: RuntimeError: could not create a primitive; virtual memory is limited to 3.5 GiB (`ulimit -v`), "
        "which may be the cause" in result.output
    )

    def no_cudnn() -> int:
        raise AssertionError("cuDNN loaded for a CPU run")

    monkeypatch.setattr(torch.backends.cudnn, "version", no_cudnn)
    assert trainer.reproduction_record(torch.device("cpu"))["versions"]["cudnn"] is None
