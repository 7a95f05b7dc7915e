"""A split's `log.jsonl` (`iqa_cli.train.runs`): read back and appended to after a process was killed
while writing a line."""

from __future__ import annotations

import json

import pytest

from iqa_cli.errors import ConfigError
from iqa_cli.train.runs import append_log, drop_logged_epochs, read_log


def test_a_line_cut_short_at_the_end_is_left_out_and_the_next_record_starts_its_own_line(tmp_path):
    """A run killed while writing its log left `{"epoch": 1, "sp` at the end: reading the log (the watch
    summary, the curves) raised a bare JSONDecodeError, and the resumed run appended its next record to
    that half line, damaging both."""
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"epoch": 0, "srcc": 0.5}) + "\n" + '{"epoch": 1, "sp', encoding="utf-8")
    assert read_log(log) == [{"epoch": 0, "srcc": 0.5}]
    append_log(log, json.dumps({"epoch": 1, "srcc": 0.6}))
    assert read_log(log) == [{"epoch": 0, "srcc": 0.5}, {"epoch": 1, "srcc": 0.6}]
    assert log.read_text(encoding="utf-8").endswith('"srcc": 0.6}\n')
    single = tmp_path / "single.jsonl"  # the cut line is the only one
    single.write_text('{"epo', encoding="utf-8")
    append_log(single, json.dumps({"epoch": 0}))
    assert read_log(single) == [{"epoch": 0}]


def test_a_damaged_line_inside_the_log_is_one_error_naming_it(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"epoch": 0}\n{"epoch": 1, oops}\n{"epoch": 2}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"damaged log at line 2"):
        read_log(log)
    log.write_text('{"epoch": 0}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"line 2 \(a JSON list, not a record\)"):
        read_log(log)
    assert read_log(tmp_path / "missing.jsonl") == []


def test_epochs_logged_by_a_run_killed_before_saving_them_are_dropped_on_resume(tmp_path):
    log = tmp_path / "log.jsonl"
    records = [
        {"epoch": -1, "part": "val", "srcc": 0.1, "event": "before training"},
        {"epoch": 0, "part": "val", "srcc": 0.2},
        {"epoch": 1, "part": "val", "srcc": 0.3},
        {"epoch": 1, "event": "stopped by SIGTERM"},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    assert drop_logged_epochs(log, 1) == 1
    assert read_log(log) == [records[0], records[1], records[3]]
    assert drop_logged_epochs(log, 1) == 0 and drop_logged_epochs(tmp_path / "none.jsonl", 0) == 0
