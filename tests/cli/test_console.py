"""The console on a terminal: one bar for the whole run above the epoch's bar; finished epoch bars go."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from iqa_cli.cli import console


def test_run_bar_and_epoch_bars_on_a_terminal(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(console, "is_tty", lambda: True)
    monkeypatch.setattr(console, "err", Console(file=screen, force_terminal=True, width=120))
    progress = console.ConsoleProgress(bar_lines=False)
    progress.overall("vtiqa split random_0: epochs", 3, 0)
    for epoch in range(3):
        progress.start(f"epoch {epoch}", 4)
        progress.advance(4)
        progress.finish()
        progress.log(f"split random_0 epoch {epoch}: loss 0.1")
        progress.overall("vtiqa split random_0: epochs", 3, epoch + 1)
        assert len(progress._live.tasks) == 1  # only the run's bar is left between epochs
    progress.end_overall()
    text = screen.getvalue()
    assert "vtiqa split random_0: epochs" in text and "epoch 0" in text and "epoch 2: loss 0.1" in text
    assert progress._live is None


def test_quiet_and_verbose_set_what_the_core_prints(tmp_path):
    """`iqa -q` keeps the core's messages (stdlib logging) and bars off stderr; `iqa -v` adds its debug
    lines; the default prints the messages, one plain line each off a terminal."""
    from typer.testing import CliRunner

    from iqa_cli.cli.main import app
    from tests.data.imagefolder import make_folder

    root = tmp_path / "photos"
    csv_path = make_folder(root)

    def prepare(*flags: str, name: str) -> str:
        args = [
            *flags,
            "prepare",
            "custom",
            "--root",
            str(root),
            "--csv",
            str(csv_path),
            "--name",
            name,
            "--higher-better",
        ]
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / f"{name}.h5"), "--size", "32x24", "-j", "1"])
        assert result.exit_code == 0, result.output
        return result.stderr

    normal = prepare(name="normal")
    assert "parsing" in normal and "decoding images: started" in normal
    assert prepare("-q", name="quiet") == ""
    assert "decode process(es)" not in normal
    verbose = prepare("-v", name="verbose")
    assert "parsing" in verbose and "6 records, 1 decode process(es), resize 32x24, h5" in verbose
    assert CliRunner().invoke(app, ["-q", "-v", "models"]).exit_code != 0


def test_a_log_record_goes_above_the_bar_of_the_active_display(monkeypatch):
    import logging

    screen = io.StringIO()
    monkeypatch.setattr(console, "is_tty", lambda: True)
    monkeypatch.setattr(console, "err", Console(file=screen, force_terminal=True, width=120))
    console.configure_logging(console.NORMAL)
    progress = console.ConsoleProgress()
    progress.start("decoding images", 4)
    logging.getLogger("iqa_cli.data.cache_write").warning("skipping a.jpg: truncated")
    logging.getLogger("iqa_cli.data.cache_write").debug("not shown at the normal level")
    progress.advance(4)
    progress.finish()
    text = screen.getvalue()
    assert "warning: skipping a.jpg: truncated" in text and "not shown" not in text


def _results_to(stdout, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`iqa ARGS` in a process of its own whose standard output is `stdout` (a file object or descriptor)."""
    env = {**os.environ, "IQA_HOME": str(tmp_path), "IQA_RUNS": str(tmp_path / "runs"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "iqa_cli", *args]
    return subprocess.run(command, stdout=stdout, stderr=subprocess.PIPE, text=True, env=env, timeout=120)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full (a device that is always full)")
@pytest.mark.parametrize(
    "args", [["runs", "list", "--json"], ["models", "--json"], ["models"]]
)  # JSON, text, a rich table
def test_results_to_a_full_disk_name_standard_output(tmp_path, args):
    """`iqa ... --json > FILE` on a full disk said "error: No space left on device", naming no file."""
    with open("/dev/full", "w", encoding="utf-8") as full:
        done = _results_to(full, args, tmp_path)
    assert done.returncode == 74
    assert done.stderr.splitlines()[-1] == (
        "error: standard output: No space left on device; free some space, or write elsewhere"
    )


@pytest.mark.parametrize("args", [["weights", "list", "--json"], ["models", "--json"], ["models"]])
def test_a_reader_that_closes_the_pipe_ends_the_command_quietly(tmp_path, args):
    """`iqa ... | head`: a table (rich) exited 1, the code of a failed command, and a JSON document or
    text printed an error. The command now leaves as a shell tool killed by SIGPIPE: code 141, no line."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first byte
    try:
        done = _results_to(write_end, args, tmp_path)
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")
