"""`--help` shows every default and reads flags as flags; usage errors are one line like every error."""

from __future__ import annotations

from typer.testing import CliRunner

from iqa_cli.cli.main import app

runner = CliRunner()


def test_train_help_shows_defaults_and_flags():
    result = runner.invoke(app, ["train", "vtiqa", "--help"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # the formatter wraps lines; compare the words
    assert "[default: 192]" in text and "[default: 0:0.01,11:0.001,21:0.005,31:0.03]" in text
    assert "<bool>" not in text and "--resume continue" in text and "--compile / --no-compile" in text


def test_usage_errors_are_one_line():
    for args, expected in (
        (["train", "vtiqa", "--epcohs", "3"], "error: --epcohs: no such option; did you mean --epochs?"),
        (["train", "bogus"], "No such command 'bogus'"),
        (["prepare", "livew"], "Missing option '--root'"),
    ):
        result = runner.invoke(app, args)
        lines = [x for x in result.output.splitlines() if x.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
        assert expected in lines[0]


def test_al_select_help_claims_no_default_distance_order():
    """`iqa al select --help` said `dataset (default)` for --distance-order, which has none: the authors'
    files are in another order, and a wrong guess gives every image another image's distances."""
    result = runner.invoke(app, ["al", "select", "--help"], env={"COLUMNS": "300"})
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "which needs one: dataset (this cache's order), or authors" in text
    assert "dataset (default)" not in text
