"""A file system that refuses a write (full, over quota, over `ulimit -f`): every writer ends in one line
that names the user's file, exit 74, and leaves nothing half-written. A file size limit stands in for a
full disk (the same refused write, EFBIG instead of ENOSPC); Python ignores SIGXFSZ, so the write fails
with an error instead of killing the process."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import resource
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from iqa_cli.atomic import atomic_path, naming_refused_writes, refused_write
from iqa_cli.errors import DataError
from iqa_cli.models.checkpoint import save_checkpoint
from iqa_cli.train.runs import append_log
from iqa_cli.train.state import save_state
from iqa_cli.weights.store import WeightStore
from tests.adversarial.helpers import error_line, invoke, run_iqa
from tests.adversarial.test_downloads import hostile  # noqa: F401 - the local server fixture
from tests.data.fixtures import make_koniq
from tests.train.caches import make_cache
from tests.weights.fileserver import write_registry

pytestmark = pytest.mark.timeout(300)
LIMIT = 64 * 1024
TOO_BIG = "File too large"


def _limit_file_size() -> None:  # preexec_fn: the child's files may not grow past LIMIT
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


@contextlib.contextmanager
def file_size_limit(nbytes: int = LIMIT):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def _nothing_left(folder: Path) -> None:
    assert not [p.name for p in folder.rglob("*.partial")]


def test_the_errno_is_found_where_libraries_hide_it():
    hdf5 = OSError("Can't write data (file write failed: time = ..., errno = 28, error message = 'No space')")
    assert refused_write(hdf5) == errno.ENOSPC
    assert refused_write(RuntimeError("Error while serializing: I/O error: Disk quota exceeded (os error 122)")) == 122
    wrapped = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    wrapped.__context__ = OSError(errno.EFBIG, "File too large")
    assert refused_write(wrapped) == errno.EFBIG
    assert refused_write(OSError(errno.EIO, "Input/output error")) is None
    assert refused_write(ValueError("errno = 5")) is None


def test_only_a_refused_write_without_a_file_is_renamed(tmp_path):
    with pytest.raises(OSError) as caught, naming_refused_writes(tmp_path / "out.h5"):
        raise RuntimeError("Can't decrement id ref count (unable to extend file properly, errno = 27)")
    assert (caught.value.errno, caught.value.filename) == (errno.EFBIG, str(tmp_path / "out.h5"))
    with pytest.raises(OSError) as caught, naming_refused_writes(tmp_path / "out.h5"):
        raise OSError(errno.ENOSPC, "No space left on device", "/elsewhere/img.png")
    assert caught.value.filename == "/elsewhere/img.png"  # names its own file already
    with pytest.raises(DataError), naming_refused_writes(tmp_path / "out.h5"):
        raise DataError("bad image (os error 28 in its message)")


def test_checkpoints_and_states_name_their_file_when_the_write_is_refused(tmp_path):
    weights = {"w": torch.zeros(4 * LIMIT // 4)}  # 4 x the limit
    for name in ("best.safetensors", "best.pt"):
        with file_size_limit(), pytest.raises(OSError) as caught:
            save_checkpoint(weights, tmp_path / name)
        assert (caught.value.errno, caught.value.filename) == (errno.EFBIG, str(tmp_path / name))
    with file_size_limit(), pytest.raises(OSError) as caught:
        save_state(tmp_path / "last.pt", {"state_dict": weights})
    assert (caught.value.errno, caught.value.filename) == (errno.EFBIG, str(tmp_path / "last.pt"))
    assert sorted(os.listdir(tmp_path)) == []  # no partial file left
    log = tmp_path / "log.jsonl"
    log.write_text("", encoding="utf-8")
    with file_size_limit(), pytest.raises(OSError) as caught:
        append_log(log, "x" * 2 * LIMIT)
    assert (caught.value.errno, caught.value.filename) == (errno.EFBIG, str(log))


def test_a_cache_write_also_fails_on_the_library_error(tmp_path):
    with file_size_limit(), pytest.raises(OSError) as caught, atomic_path(tmp_path / "x.h5") as tmp:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("a", data=np.zeros(LIMIT))
    assert (caught.value.errno, caught.value.filename) == (errno.EFBIG, str(tmp_path / "x.h5"))
    _nothing_left(tmp_path)


@pytest.mark.parametrize("suffix", ["h5", "npz"])
def test_prepare_on_a_full_file_system_is_one_line_naming_the_cache(tmp_path, suffix):
    make_koniq(tmp_path / "koniq")
    result = run_iqa(
        "prepare", "koniq", "--root", tmp_path / "koniq", "--out", tmp_path / f"k.{suffix}", "--splits", "1",
        env={"IQA_HOME": str(tmp_path / "home")}, preexec_fn=_limit_file_size,
    )  # fmt: skip
    line = error_line(result)
    assert result.returncode == 74, result.stderr
    assert line.startswith(f"error: {tmp_path / f'k.{suffix}'}: {TOO_BIG}; "), line
    assert "ulimit -f" in line
    # Before: HDF5 ended as "RuntimeError: Can't decrement id ref count" (exit 1); NPZ named no file, and
    # the abandoned zip archive printed a traceback on its way out ("Exception ignored in ... ZipFile").
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / f"k.{suffix}").exists()
    _nothing_left(tmp_path)


def test_training_on_a_full_file_system_names_the_model_it_could_not_save(tmp_path):
    cache = make_cache("mini", tmp_path / "folder", tmp_path / "mini.h5")
    run = tmp_path / "run"
    result = run_iqa(
        "train", "vtiqa", "--tiny", "--device", "cpu", "--data", cache, "--epochs", "1", "--split", "0",
        "--select-on", "test", "--out", run, env={"IQA_HOME": str(tmp_path / "home")}, preexec_fn=_limit_file_size,
    )  # fmt: skip
    line = error_line(result)
    assert result.returncode == 74, result.stderr
    # Before: "SafetensorError: Error while serializing: I/O error: File too large (os error 27)", exit 1.
    assert line.startswith(f"error: {run / 'split-random_0' / 'best.safetensors'}: {TOO_BIG}; "), line
    _nothing_left(run)


def test_a_download_onto_a_full_file_system_is_not_retried_as_a_network_failure(hostile, tmp_path, monkeypatch):  # noqa: F811
    body = b"good weights" * 1000  # what the server's /good sends
    entry = {"name": "good", "urls": [f"{hostile}/good/w.pth"], "sha256": hashlib.sha256(body).hexdigest()}
    monkeypatch.setenv("IQA_WEIGHTS_REGISTRY", str(write_registry(tmp_path / "registry.json", [entry])))
    with file_size_limit(4096):
        result = invoke("weights", "fetch", "good", "--retries", "0")
    line = error_line(result)
    assert result.exit_code == 74
    store = WeightStore()
    assert line.startswith(f"error: {store.root}/good") and TOO_BIG in line, line


def test_a_distorted_set_stops_at_the_refused_write_and_resumes(tmp_path):
    from tests.train.caches import write_folder

    refs = write_folder(tmp_path / "refs", n=4)
    args = ["prepare", "distorted", "--refs", refs, "--types", "1-3", "--size", "64x64", "--workers", "1"]
    env = {"IQA_HOME": str(tmp_path / "home")}
    result = run_iqa(*args, "--out", tmp_path / "d.h5", env=env, preexec_fn=_limit_file_size)
    line = error_line(result)
    # Before: HDF5 wrote its cached chunks when their objects were freed, where the refused write was only
    # printed ("Exception ignored in: h5py._objects.ObjectID.__dealloc__", thousands of lines), and the
    # generation went on until the process crashed (exit -11).
    assert result.returncode == 74, result.stderr[-2000:]
    assert line.startswith(f"error: {tmp_path / 'd.h5'}: {TOO_BIG}; "), line
    assert "Exception ignored" not in result.stderr
    resumed = run_iqa(*args, "--out", tmp_path / "d.h5", "--resume", env=env)
    fresh = run_iqa(*args, "--out", tmp_path / "fresh.h5", env=env)
    assert resumed.returncode == 0 and fresh.returncode == 0, resumed.stderr + fresh.stderr
    with h5py.File(tmp_path / "d.h5") as a, h5py.File(tmp_path / "fresh.h5") as b:
        assert np.array_equal(a["images"][()], b["images"][()]) and list(a["names"]) == list(b["names"])


def test_a_lock_s_holder_record_and_a_distorted_set_s_progress_name_their_file(tmp_path):
    from iqa_cli.distort.store import progress_path, write_progress
    from iqa_cli.locks import hold, lock_path

    # Before: "error: No space left on device", naming nothing (the first write of `iqa train --out`).
    with file_size_limit(0), pytest.raises(OSError) as caught, hold(tmp_path / "run", "run folder"):
        pass
    assert (caught.value.errno, caught.value.filename) == (errno.EFBIG, str(lock_path(tmp_path / "run")))
    # Before: a temporary `.progress.json.tmp` was left beside the partial set.
    with file_size_limit(0), pytest.raises(OSError) as caught:
        write_progress(tmp_path / "d.h5", {"images": 10, "references_done": 1})
    assert caught.value.filename == str(progress_path(tmp_path / "d.h5"))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_copy_onto_a_full_disk_names_the_copy_not_the_source(tmp_path, monkeypatch):
    """shutil names the source of a copy first: `iqa weights add` onto a full disk said the file being
    added had "No space left on device"."""
    from iqa_cli.weights import store

    source = tmp_path / "mine.safetensors"
    save_checkpoint({"w": torch.zeros(4)}, source)

    def full_copy(src, dst):  # what copying with sendfile raises when the disk is full
        raise OSError(errno.ENOSPC, "No space left on device", str(src), None, str(dst))

    monkeypatch.setattr(store.shutil, "copyfile", full_copy)
    line = error_line(invoke("weights", "add", "mine", source))
    assert line.startswith(f"error: {WeightStore().root}/.mine.") and "No space left on device" in line, line
    assert str(source) not in line
