"""`iqa_cli.stop`: a SIGTERM's request outlives its exception, and no file is committed after it."""

from __future__ import annotations

import pytest

from iqa_cli.atomic import atomic_path
from iqa_cli.stop import Terminated, clear_stop, raise_if_stopped, request_stop, stop_requested


def test_a_requested_stop_keeps_atomic_path_from_committing(tmp_path):
    final = tmp_path / "out.h5"
    request_stop()
    try:
        with pytest.raises(Terminated), atomic_path(final) as tmp:
            tmp.write_bytes(b"finished work that must not appear under its final name")
        assert not final.exists() and list(tmp_path.iterdir()) == []
        assert stop_requested()
    finally:
        clear_stop()
    raise_if_stopped()  # cleared: nothing raised
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"ok")
    assert final.read_bytes() == b"ok"


def test_a_remembered_ctrl_c_raises_keyboard_interrupt_not_terminated(tmp_path):
    request_stop("SIGINT")
    request_stop("SIGTERM")  # the first request is the one kept
    try:
        with pytest.raises(KeyboardInterrupt) as raised, atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("x", encoding="utf-8")
        assert not isinstance(raised.value, Terminated) and list(tmp_path.iterdir()) == []
    finally:
        clear_stop()
