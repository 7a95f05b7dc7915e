"""Shared pieces of the adversarial suite: run `iqa` as a user would (a subprocess, or CliRunner),
and check that a failure is one `error:` line with a non-zero exit code and no traceback."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from iqa_cli.cli.main import app

runner = CliRunner()


def iqa_process(*args: str, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """`python -m iqa_cli ARGS` in its own process group (so a test can signal it as a shell would)."""
    full_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "iqa_cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=full_env,
        start_new_session=True,
        **popen,
    )


def run_iqa(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None, **popen
) -> subprocess.CompletedProcess:
    process = iqa_process(*args, env=env, **popen)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        out, err = process.communicate()
        raise AssertionError(f"iqa {' '.join(map(str, args))} hung for {timeout} s; stderr: {err[-2000:]}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def error_line(result) -> str:
    """The one `error:` line of a failed command (CompletedProcess or CliRunner result)."""
    if isinstance(result, subprocess.CompletedProcess):
        code, text = result.returncode, (result.stdout or "") + (result.stderr or "")
    else:  # CliRunner: `output` holds stdout and stderr together
        code, text = result.exit_code, result.output
    assert code not in (0, None), f"expected a failure, got exit 0: {text[-2000:]}"
    lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    return lines[0]


def invoke(*args: str, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
