"""Option checks shared by commands: a file option that would write where standard output goes."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from iqa_cli.atomic import is_standard_output

ROOT = Path(__file__).resolve().parents[2]

# Every command with --json and a file option; each is refused before it reads a model or a cache, so
# none needs one here.
COMMANDS = [
    (["predict", "vtiqa", "photos", "--weights", "none", "--json", "--csv"], "--csv"),
    (["eval", "vtiqa", "--weights", "none", "--cross", "none", "--json", "--per-image"], "--per-image"),
    (["eval", "vtiqa", "--weights", "none", "--cross", "none", "--json", "--csv"], "--csv"),
    (["al", "select", "--data", "none", "--round", "2", "--json", "--out"], "--out"),
    (["prepare", "inspect", "none", "--json", "--plot"], "--plot"),
    (["prepare", "distorted", "--refs", "none", "--json", "--preview"], "--preview"),
]


def _iqa(args: list[str], tmp_path: Path, redirect: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "IQA_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = " ".join(shlex.quote(part) for part in [sys.executable, "-m", "iqa_cli", *args])
    return subprocess.run(["bash", "-c", f"exec {command} {redirect}"], capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)  # fmt: skip


@pytest.mark.parametrize(("args", "option"), COMMANDS)
def test_a_table_is_never_written_into_the_json_a_program_reads(tmp_path, args, option):
    """`iqa eval ... --json --per-image /dev/stdout` put the CSV inside the JSON document on standard
    output, which no JSON reader could then parse."""
    done = _iqa([*args, "/dev/stdout"], tmp_path)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    said = f"error: {option}: /dev/stdout is standard output, where --json prints its report"
    assert said in done.stderr.splitlines()[-1]


def test_a_table_is_never_written_over_the_file_standard_output_goes_to(tmp_path):
    """`iqa predict ... --csv scores.csv > scores.csv`: the table replaced the file the shell had opened for
    the report, and the report went to a file no longer there."""
    done = _iqa(["predict", "vtiqa", "photos", "--weights", "none", "--csv", "scores.csv"], tmp_path, "> scores.csv")
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.splitlines()[-1]
        == "error: --csv: scores.csv is the file standard output goes to; give another file"
    )


def test_standard_output_is_told_by_the_file_it_reaches(tmp_path):
    assert not is_standard_output(tmp_path / "missing.csv")
    assert not is_standard_output(tmp_path)
    assert is_standard_output(f"/proc/self/fd/{1}") or not Path("/proc/self/fd").is_dir()
