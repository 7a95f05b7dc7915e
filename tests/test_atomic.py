"""`check_output_file`: output paths that cannot be written are refused before any work."""

from __future__ import annotations

import os

import pytest

from iqa_cli.atomic import check_output_file, check_output_folder
from iqa_cli.errors import ConfigError


def test_a_folder_a_file_in_the_way_and_a_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"--csv: .* is a folder; give a file name"):
        check_output_file(tmp_path, "--csv")
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match=r"--csv: .*/f is a file, so .*/f/a/b.csv cannot be written"):
        check_output_file(tmp_path / "f" / "a" / "b.csv", "--csv")
    assert check_output_file(tmp_path / "new" / "b.csv", "--csv") == tmp_path / "new" / "b.csv"
    assert not (tmp_path / "new").exists()  # checked, not made


def test_a_folder_without_write_permission(tmp_path, monkeypatch):
    # Tests run as root here, which may write anywhere: the permission answer itself is stubbed.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match=r"--per-image: cannot write in .* \(permission denied\)"):
        check_output_file(tmp_path / "x.csv", "--per-image")


def test_an_output_folder_where_a_file_stands(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match=r"--out: .*/f is a file; expected a folder"):
        check_output_folder(tmp_path / "f", "--out")
    with pytest.raises(ConfigError, match=r"--out: .*/f is a file, so .*/f/run cannot be written"):
        check_output_folder(tmp_path / "f" / "run", "--out")
    assert check_output_folder(tmp_path / "runs" / "a", "--out") == tmp_path / "runs" / "a"
    assert check_output_folder(tmp_path, "--out") == tmp_path  # an existing folder (a resumed run) is fine
