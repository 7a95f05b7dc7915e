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
