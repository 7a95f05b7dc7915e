"""HDF5 files where the file system's locks fail, or where another program holds one open for writing."""

from __future__ import annotations

import errno
import fcntl
import subprocess
import sys

import h5py
import pytest
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.errors import DataError
from iqa_cli.h5files import lock_failure, open_h5
from tests.data.imagefolder import make_folder
from tests.train.caches import write_folder

runner = CliRunner()
NO_LOCKS = "Unable to synchronously open file (unable to lock file, errno = 524, error message = 'Unknown error 524')"


@pytest.fixture
def lockless(monkeypatch):
    """A file system without working locks, as Lustre mounted without `flock`: every HDF5 open that locks
    fails, and so does `flock` itself."""
    from iqa_cli import h5files

    class LocklessFile(h5py.File):
        def __init__(self, name, mode="r", *args, locking=None, **options):
            if locking is not False:
                raise OSError(524, NO_LOCKS)
            super().__init__(name, mode, *args, locking=locking, **options)

    def flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(h5py, "File", LocklessFile)
    monkeypatch.setattr(fcntl, "flock", flock)
    monkeypatch.setattr(h5files, "_warned", set())


@pytest.fixture
def held(tmp_path):
    """An HDF5 file that another program has open for writing (it holds the file's lock)."""
    path = tmp_path / "results.h5"
    with h5py.File(path, "w") as handle:
        handle["mine"] = [1, 2, 3]
    code = f"import h5py, time; f = h5py.File({str(path)!r}, 'a'); print('open', flush=True); time.sleep(60)"
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "open"
        yield path
    finally:
        other.kill()
        other.wait()


def test_a_lock_failure_is_told_from_other_errors():
    assert lock_failure(OSError(524, NO_LOCKS)) == 524
    assert lock_failure(OSError(2, "Unable to open file (file signature not found)")) is None


def test_where_locks_fail_a_file_is_opened_without_one_and_warned_about_once(lockless, tmp_path, caplog):
    path = tmp_path / "a.h5"
    with open_h5(path, "w") as handle:
        handle["x"] = [1.0]
    with open_h5(path) as handle:
        assert handle["x"][0] == 1.0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "file locks do not work in" in warnings[0] and "errno 524" in warnings[0]


def test_a_lock_another_program_holds_is_one_error_not_read_past(held):
    with pytest.raises(DataError, match="is open for writing in another program"):
        open_h5(held)


def test_prepare_never_replaces_an_hdf5_file_another_program_is_writing(held, tmp_path):
    """`--out results.h5`, an HDF5 file another program had open for writing: the failed open read as a
    damaged file, which prepare replaces, and the other program's file was gone."""
    root = tmp_path / "photos"
    make_folder(root)
    result = runner.invoke(app, ["prepare", "custom", "--root", str(root), "-j", "1", "--out", str(held)])
    assert result.exit_code == 65 and "is open for writing in another program" in result.output, result.output
    with h5py.File(held, "r", locking=False) as handle:
        assert list(handle["mine"][()]) == [1, 2, 3]


def test_prepare_train_and_eval_work_where_file_locks_fail(lockless, tmp_path):
    """On Lustre mounted without flock every HDF5 open failed: a good cache read as "truncated or
    damaged", and prepare, training and evaluation could not run there at all."""
    root = write_folder(tmp_path / "photos", n=32)
    made = ["prepare", "custom", "--root", str(root), "--name", "mine", "--range", "1,5", "--splits", "1", "-j", "1"]
    prepared = runner.invoke(app, [*made, "--test-fraction", "0.25"])
    assert prepared.exit_code == 0, prepared.output
    assert "file locks do not work in" in prepared.output
    fast = ["--tiny", "--device", "cpu", "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.25"]
    trained = runner.invoke(app, ["train", "vtiqa", *fast, "--data", "mine", "--name", "r"])
    assert trained.exit_code == 0, trained.output
    scored = runner.invoke(app, ["eval", "vtiqa", "--data", "mine", "--weights", "r", "--json"])
    assert scored.exit_code == 0, scored.output
