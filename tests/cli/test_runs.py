"""`iqa runs list|show|rm`, runs found by dataset name or cache path, `$IQA_RUNS`, and the run record."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.home import data_dir
from tests.train.caches import make_cache

runner = CliRunner()
FAST = ["--tiny", "--freeze-epochs", "0", "--optimizer", "adamw", "--lr", "0.002", "--batch-size", "8"]
FAST += ["--dropout", "0", "--device", "cpu", "--epochs", "1"]


def test_runs_list_show_rm_and_the_record(tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_RUNS", str(tmp_path / "project-runs"))
    cache = make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    assert runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "mini", "--name", "first"]).exit_code == 0
    assert (tmp_path / "project-runs" / "first" / "run.json").is_file()  # $IQA_RUNS
    listed = runner.invoke(app, ["runs", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [r["name"] for r in rows] == ["first"] and rows[0]["status"] == "complete"
    assert rows[0]["method"] == "vtiqa" and rows[0]["splits_done"] == 1 and isinstance(rows[0]["srcc"], float)
    text = runner.invoke(app, ["runs", "list", "--method", "vtiqa", "--data", "mini"])
    assert "first" in text.stdout and "…" not in text.stdout
    assert json.loads(runner.invoke(app, ["runs", "list", "--data", str(cache), "--json"]).stdout)[0]["name"] == "first"
    assert json.loads(runner.invoke(app, ["runs", "list", "--method", "ieit", "--json"]).stdout) == []
    shown = json.loads(runner.invoke(app, ["runs", "show", "first", "--json"]).stdout)
    for key in ("versions", "command", "host", "created", "finished", "world_size"):
        assert shown[key], key
    assert shown["versions"]["torch"] and shown["command"].startswith("iqa")
    # `--data PATH` finds the run trained with `--data NAME`
    evaluated = runner.invoke(app, ["eval", "vtiqa", "--data", str(cache), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    assert runner.invoke(app, ["runs", "rm", "first"]).exit_code == 0
    assert not (tmp_path / "project-runs" / "first").exists()
    assert "no run named 'first'" in runner.invoke(app, ["runs", "show", "first"]).output


def test_a_tiny_run_s_resolved_config_is_accepted_back(tmp_path):
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    first = tmp_path / "first"
    assert runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "mini", "--out", str(first)]).exit_code == 0
    again = runner.invoke(app, ["train", "vtiqa", "--data", "mini", "--config", str(first / "config.toml"),
                                "--out", str(tmp_path / "again"), "--json"])  # fmt: skip
    assert again.exit_code == 0, again.output
    a, b = (json.loads((p / "run.json").read_text())["config"] for p in (first, tmp_path / "again"))
    assert a == b and a["tiny"] is True
