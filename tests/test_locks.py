"""`hold`: one job per output, and a file system whose `flock` does not work."""

from __future__ import annotations

import errno
import fcntl

import pytest

from iqa_cli.errors import ConfigError
from iqa_cli.locks import hold, lock_path


def _failing_flock(code: int):
    def flock(fd, operation):
        if operation & fcntl.LOCK_EX:
            raise OSError(code, "flock failed")

    return flock


def test_where_flock_does_not_work_the_block_runs_with_a_warning(tmp_path, monkeypatch, caplog):
    """Lustre mounted without flock (ENOSYS): every prepare and training there failed with "in use by
    another iqa job (another process)", though no job held anything."""
    monkeypatch.setattr(fcntl, "flock", _failing_flock(errno.ENOSYS))
    with hold(tmp_path / "run", "run folder") as locked:
        assert locked is False  # what `iqa runs rm` checks before trusting a free lock
    assert not lock_path(tmp_path / "run").exists()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("file locks do not work in" in w and "run folder" in w for w in warnings), warnings


def test_a_lock_someone_holds_is_still_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(fcntl, "flock", _failing_flock(errno.EWOULDBLOCK))
    with (
        pytest.raises(ConfigError, match="run folder is in use by another iqa job"),
        hold(tmp_path / "run", "run folder"),
    ):
        pass


def test_a_held_lock_says_so(tmp_path):
    with hold(tmp_path / "run", "run folder") as locked:
        assert locked is True and lock_path(tmp_path / "run").exists()
