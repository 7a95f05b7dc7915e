"""Strict `IQA_*` variables: a value that does not parse is one error line before any work."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from iqa_cli import envvars
from iqa_cli.cli.main import app
from iqa_cli.errors import ConfigError


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("IQA_OFFLINE", "maybe", "IQA_OFFLINE='maybe': expected 1/true/yes/on or 0/false/no/off"),
        ("IQA_MAX_PIXELS", "-5", "IQA_MAX_PIXELS='-5': expected a positive number of pixels"),
        ("IQA_MAX_PIXELS", "nan", "IQA_MAX_PIXELS='nan': expected a positive number of pixels"),
        ("IQA_MAX_CHECKPOINT_BYTES", "abc", "IQA_MAX_CHECKPOINT_BYTES='abc': expected a number of bytes"),
        ("IQA_MAX_DOWNLOAD_BYTES", "0", "IQA_MAX_DOWNLOAD_BYTES='0': expected a positive number of bytes"),
    ],
)
def test_a_bad_value_is_one_line_for_every_command(monkeypatch, name, value, message):
    """`IQA_OFFLINE=maybe` meant online, `IQA_MAX_PIXELS=-5` a one-pixel limit, and a bad byte count a
    raw ValueError (exit 1) in the middle of `iqa eval`."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        envvars.check_environment()
    result = CliRunner().invoke(app, ["runs", "list"])
    assert result.exit_code == 2 and result.output.strip() == f"error: {message}"


def test_good_values_and_defaults(monkeypatch):
    for name in ("IQA_OFFLINE", "IQA_MAX_PIXELS", "IQA_MAX_CHECKPOINT_BYTES", "IQA_MAX_DOWNLOAD_BYTES"):
        monkeypatch.delenv(name, raising=False)
    assert not envvars.offline() and envvars.max_pixels() == envvars.DEFAULT_MAX_PIXELS
    monkeypatch.setenv("IQA_OFFLINE", " Yes ")
    monkeypatch.setenv("IQA_MAX_PIXELS", "2.5e8")
    assert envvars.offline() and envvars.max_pixels() == 250_000_000
    monkeypatch.setenv("IQA_OFFLINE", "off")
    assert not envvars.offline()


def test_iqa_debug_0_means_off(monkeypatch):
    """`IQA_DEBUG=0` turned tracebacks on (any non-empty value did)."""
    from iqa_cli.cli import main

    monkeypatch.setenv("IQA_DEBUG", "0")
    assert not main._debug_env()
    monkeypatch.setenv("IQA_DEBUG", "1")
    assert main._debug_env()


@pytest.mark.parametrize("name", ["IQA_HOME", "IQA_RUNS"])
def test_a_home_or_runs_folder_that_is_a_file_is_one_line_naming_the_variable(tmp_path, monkeypatch, name):
    """IQA_HOME naming a file made `iqa prepare` blame an `--out` it was never given, `iqa train` report
    "no prepared cache", and `iqa runs list` say "no runs" with exit 0."""
    a_file = tmp_path / "a-file"
    a_file.write_text("", encoding="utf-8")
    monkeypatch.setenv(name, str(a_file))
    message = f"error: {name}: {a_file} is a file; expected a folder"
    for command in (["runs", "list"], ["prepare", "custom", "--root", str(tmp_path)], ["eval", "vtiqa", "--data", "x"]):
        result = CliRunner().invoke(app, command)
        assert result.exit_code == 2 and result.output.strip() == message, (command, result.output)


@pytest.mark.parametrize("name", ["IQA_HOME", "IQA_RUNS"])
def test_a_blank_home_or_runs_folder_is_refused(tmp_path, monkeypatch, name):
    """`IQA_HOME=" "` (a job script's `IQA_HOME= $SCRATCH`) made a folder named by a space in the working
    folder: caches prepared there were "missing" for the next job, started elsewhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(name, "  ")
    result = CliRunner().invoke(app, ["runs", "list"])
    said = f"error: {name} holds only blanks; expected a folder (or leave it unset)"
    assert result.exit_code == 2 and result.output.strip() == said, result.output
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv(name, "")  # empty: unset, as before
    assert CliRunner().invoke(app, ["runs", "list"]).exit_code == 0


def test_an_empty_home_variable_falls_back_to_the_user_s_home_folder(monkeypatch):
    """`HOME=` (a job started with an emptied environment) put the caches in `/.cache/iqa`: Python reads an
    empty HOME as `/`."""
    import os
    import pwd
    from pathlib import Path

    from iqa_cli.home import home

    monkeypatch.delenv("IQA_HOME", raising=False)
    expected = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".cache" / "iqa"
    for value in ("", "  "):
        monkeypatch.setenv("HOME", value)
        assert home() == expected.absolute()
    monkeypatch.setenv("HOME", "/somewhere/else")
    assert home() == Path("/somewhere/else/.cache/iqa")  # a HOME that is set is the home folder
