"""`iqa prepare` never hangs: a bad file anywhere, a decode worker killed (the OOM killer), the
command itself terminated or killed. Each case runs the real CLI in a subprocess under a timeout, and
the deadlock-prone one repeats enough times to catch a 1-in-4 hang (12 runs: 3 % chance to miss)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.adversarial.helpers import alive, children_of, error_line, iqa_process, run_iqa
from tests.data.imagefolder import save, truncate

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc and process groups")


def _folder(root: Path, count: int, side: int) -> Path:
    """`count` JPEGs of side x side (a decoded image is side^2 x 3 bytes) and a name,score CSV."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    lines = ["name,score"]
    for i in range(count):
        save(root / f"img{i:03d}.jpg", np.roll(base, i, axis=1), quality=92)
        lines.append(f"img{i:03d}.jpg,{1 + (i % 40) / 10}")
    (root / "scores.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.mktemp("photos"), 40, 500)  # 750 KB per decoded image, as LIVEW


def _prepare_args(root: Path, out: Path, workers: int) -> list[str]:
    return ["prepare", "custom", "--root", str(root), "--name", "mine", "--range", "1,5", "--out", str(out),
            "-j", str(workers)]  # fmt: skip


def test_one_truncated_jpeg_ends_every_run_with_its_error_line(photos, tmp_path):
    rng = random.Random(7)
    for trial in range(12):
        root = tmp_path / f"t{trial}"
        shutil.copytree(photos, root)
        bad = root / f"img{rng.randrange(40):03d}.jpg"
        truncate(bad, 0.6)  # the header survives: it fails only when decoded
        out = tmp_path / f"t{trial}.h5"
        started = time.monotonic()
        result = run_iqa(*_prepare_args(root, out, 2 + trial % 3), timeout=60)
        line = error_line(result)
        assert bad.name in line and "truncated" in line, line
        assert time.monotonic() - started < 30
        assert not out.exists() and not list(tmp_path.glob(f"t{trial}.h5*"))  # nothing half-written


def _wait_for_workers(process, want: int, timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [p for p in children_of(process.pid) if alive(p)]
        if len(workers) >= want:
            return workers
        if process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"prepare started {len(children_of(process.pid))} workers, expected {want}")


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.mktemp("many"), 400, 400)


def test_a_killed_decode_worker_fails_the_command_with_one_line(many, tmp_path):
    out = tmp_path / "k.h5"
    process = iqa_process(*_prepare_args(many, out, 3))
    workers = _wait_for_workers(process, 3)
    time.sleep(0.3)
    os.kill(workers[0], signal.SIGKILL)  # what the OOM killer does
    try:
        _, err = process.communicate(timeout=60)
    except Exception:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    if process.returncode == 0:
        pytest.skip("the run finished before the worker was killed")
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "worker process died" in lines[0] and "Traceback" not in err, err[-2000:]
    assert not out.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_prepare_leaves_no_worker_behind(many, tmp_path, sig):
    out = tmp_path / "s.h5"
    process = iqa_process(*_prepare_args(many, out, 3))
    workers = _wait_for_workers(process, 3)
    time.sleep(0.3)
    os.kill(process.pid, sig)
    try:
        _, err = process.communicate(timeout=30)
    except Exception:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode != 0
    deadline = time.monotonic() + 10
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(w) for w in workers), "a decode worker outlived prepare"
    assert "BrokenPipeError" not in err and "Traceback" not in err, err[-2000:]
    assert not out.exists()
