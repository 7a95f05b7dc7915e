"""The console script's start: standard descriptors the caller closed (`>&-`, `2>&-`) are made safe."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from tests.data.imagefolder import make_folder

ROOT = Path(__file__).resolve().parents[2]


def _iqa_with_closed(descriptors: str, args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`iqa ARGS` started by a shell that closed `descriptors` (e.g. "2>&-") first."""
    env = {**os.environ, "IQA_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = " ".join(shlex.quote(part) for part in [sys.executable, "-m", "iqa_cli", *args])
    return subprocess.run(["bash", "-c", f"exec {command} {descriptors}"], capture_output=True, text=True,
                          env=env, timeout=300)  # fmt: skip


def test_a_closed_standard_output_is_no_crash(tmp_path):
    """`iqa runs list >&-` died at start with a traceback (Python sets sys.stdout to None)."""
    done = _iqa_with_closed(">&-", ["runs", "list"], tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_with_standard_error_closed_results_stay_alone_on_standard_output(tmp_path):
    """`iqa prepare ... --json 2>&-` failed (exit 1), after printing its log lines into standard output,
    where the JSON document goes; and the first file it opened took descriptor 2."""
    root = tmp_path / "photos"
    make_folder(root)
    out = tmp_path / "mine.h5"
    args = ["prepare", "custom", "--root", str(root), "--name", "mine", "--out", str(out), "-j", "1", "--json"]
    done = _iqa_with_closed("2>&-", args, tmp_path)
    assert done.returncode == 0, done.stdout
    assert json.loads(done.stdout)["count"] > 0 and out.is_file()


def test_a_file_opened_after_start_never_takes_a_closed_standard_descriptor(tmp_path):
    probe = (
        "import os\n"
        "from iqa_cli.cli.entry import sanitise_standard_descriptors\n"
        "sanitise_standard_descriptors()\n"
        f"print(os.open({str(tmp_path / 'cache.h5')!r}, os.O_CREAT | os.O_WRONLY), file=open(3, 'w'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = f"exec 3>&1; exec {shlex.quote(sys.executable)} -c {shlex.quote(probe)} <&- 2>&-"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0 and int(done.stdout) > 3, done.stdout + done.stderr
