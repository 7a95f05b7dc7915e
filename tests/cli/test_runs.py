"""`iqa runs list|show|rm`, runs found by dataset name or cache path, `$IQA_RUNS`, and the run record."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.home import data_dir
from tests.cli.options import without
from tests.train.caches import make_cache

runner = CliRunner()
FAST = [
    "--val-fraction",
    "0.2",
    "--tiny",
    "--freeze-epochs",
    "0",
    "--optimizer",
    "adamw",
    "--lr",
    "0.002",
    "--batch-size",
    "8",
]
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
    # a filter that matches nothing says what the runs there are (it read as an empty runs folder)
    unmatched = runner.invoke(app, ["runs", "list", "--data", "minii"])
    assert unmatched.exit_code == 0 and "no runs match --data minii in" in unmatched.stderr
    assert "the 1 run(s) there are: vtiqa on mini (1)" in " ".join(unmatched.stderr.split())
    misspelt = runner.invoke(app, ["runs", "list", "--method", "vtqa"])  # was "no runs", exit 0
    assert misspelt.exit_code == 2 and "unknown method 'vtqa'" in misspelt.output
    shown = json.loads(runner.invoke(app, ["runs", "show", "first", "--json"]).stdout)
    for key in ("versions", "command", "host", "created", "finished", "world_size"):
        assert shown[key], key
    assert shown["versions"]["torch"] and shown["command"].startswith("iqa")
    # `--data PATH` finds the run trained with `--data NAME`
    evaluated = runner.invoke(app, ["eval", "vtiqa", "--data", str(cache), "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    by_run = runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--weights", "first"])  # a run name
    assert by_run.exit_code == 0 and "evaluating run" in by_run.output and "first" in by_run.output
    # A run folder holding what no run writes (a run an older iqa wrote into a user's folder): not deleted.
    notes = tmp_path / "project-runs" / "first" / "thesis-notes.txt"
    notes.write_text("mine", encoding="utf-8")
    refused = runner.invoke(app, ["runs", "rm", "first"])
    assert refused.exit_code == 2 and "1 file(s) or folder(s) no run writes (thesis-notes.txt)" in refused.output
    notes.unlink()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "project-runs" / "first")
    linked = runner.invoke(app, ["runs", "rm", str(link)])
    assert linked.exit_code == 2 and "is a symbolic link to" in linked.output  # not a raw OSError
    assert runner.invoke(app, ["runs", "rm", "first"]).exit_code == 0
    assert not (tmp_path / "project-runs" / "first").exists()
    assert "no run named 'first'" in runner.invoke(app, ["runs", "show", "first"]).output


def test_runs_list_marks_a_run_kept_on_its_test_part_as_optimistic(tmp_path):
    """`iqa runs list` printed the SRCC of a `--select-on test` run (the epoch that scored best on the test
    part itself) like any other; `iqa runs show` and `iqa eval` said "optimistic", the list did not."""
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    assert runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "mini", "--name", "on-val"]).exit_code == 0
    on_test = [*without(FAST, "--val-fraction"), "--select-on", "test", "--data", "mini", "--name", "on-test"]
    assert runner.invoke(app, ["train", "vtiqa", *on_test]).exit_code == 0
    rows = {r["name"]: r for r in json.loads(runner.invoke(app, ["runs", "list", "--json"]).stdout)}
    assert rows["on-test"]["selected_on"] == "test" and rows["on-val"]["selected_on"] == "val"
    lines = runner.invoke(app, ["runs", "list"]).stdout.splitlines()
    marked = {line.split()[0]: line.count("§") for line in lines[1:] if line.split()[0] in rows}
    assert marked == {"on-test": 2, "on-val": 0}  # its SRCC and PLCC
    assert lines[-1].startswith("§ kept model chosen on the test part itself")
    # `iqa eval`'s title read "kept model test part (paper habit; optimistic)": what the part did was lost
    title = " ".join(runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--weights", "on-test"]).stdout.split())
    assert "kept model selected on the test part (paper habit; optimistic)" in title


def test_a_run_whose_record_is_damaged_is_named_not_passed_over_in_silence(tmp_path, monkeypatch):
    """`runs list` left it out and `iqa eval --data X` scored the newest readable run instead, unsaid."""
    monkeypatch.setenv("IQA_RUNS", str(tmp_path / "runs"))
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    assert runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "mini", "--name", "first"]).exit_code == 0
    (tmp_path / "runs" / "later").mkdir()
    (tmp_path / "runs" / "later" / "run.json").write_text('{"method": "vtiqa", "dat', encoding="utf-8")
    (tmp_path / "runs" / "notes").mkdir()  # no run.json: not a run, nothing to say
    (tmp_path / "runs" / "todo.txt").write_text("compare with koniq", encoding="utf-8")  # a file: not a run either
    listed = runner.invoke(app, ["runs", "list", "--json"])
    assert listed.exit_code == 0 and [r["name"] for r in json.loads(listed.stdout)] == ["first"]
    said = [line for line in listed.stderr.splitlines() if "warning" in line]
    assert len(said) == 1 and f"{tmp_path / 'runs' / 'later' / 'run.json'}: damaged run record" in said[0]


def test_a_tiny_run_s_resolved_config_is_accepted_back(tmp_path):
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    first = tmp_path / "first"
    assert runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "mini", "--out", str(first)]).exit_code == 0
    again = runner.invoke(app, ["train", "vtiqa", "--data", "mini", "--config", str(first / "config.toml"),
                                "--out", str(tmp_path / "again"), "--json"])  # fmt: skip
    assert again.exit_code == 0, again.output
    a, b = (json.loads((p / "run.json").read_text(encoding="utf-8"))["config"] for p in (first, tmp_path / "again"))
    assert a == b and a["tiny"] is True


def test_print_config_shows_the_plan_and_creates_no_run(tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_RUNS", str(tmp_path / "runs"))
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    result = runner.invoke(app, ["train", "vtiqa", "--data", "mini", "--epochs", "7", "--print-config"])
    assert result.exit_code == 0, result.output
    assert "epochs = 7" in result.stdout and "batch_size = 192" in result.stdout
    assert "data.h5" not in result.stdout and str(data_dir() / "mini.h5") in result.stdout
    assert "precision train float32" in result.stdout  # on the CPU
    plan = json.loads(runner.invoke(app, ["train", "vtiqa", "--data", "mini", "--print-config", "--json"]).stdout)
    assert plan["sections"]["vtiqa protocol"]["epochs"] == 2000 and plan["device"] == "cpu"
    assert plan["splits"] == ["random_0"]
    every = runner.invoke(app, ["train", "vtiqa", "--data", "mini", "--split", "all", "--print-config"])
    assert "splits random_0, random_1, device cpu" in every.stdout
    # A pre-flight check: what `iqa train` refuses before training, --print-config refused too (it printed
    # a plan for a split the cache lacks, and for --resume with options the run would refuse).
    missing = runner.invoke(app, ["train", "vtiqa", "--data", "mini", "--split", "7", "--print-config"])
    assert missing.exit_code == 65 and "split '7' does not exist" in missing.output
    assert not (tmp_path / "runs").exists()
    run = ["train", "vtiqa", *FAST, "--data", "mini", "--name", "r"]
    assert runner.invoke(app, run).exit_code == 0
    changed = runner.invoke(app, ["train", "vtiqa", "--resume", "--name", "r", "--lr", "5", "--print-config"])
    assert changed.exit_code == 2 and "these options differ from it: lr" in changed.output
    longer = runner.invoke(
        app, ["train", "vtiqa", "--resume", "--name", "r", "--epochs", "3", "--print-config", "--json"]
    )
    assert json.loads(longer.stdout)["sections"]["vtiqa protocol"]["epochs"] == 3
    assert (
        json.loads((tmp_path / "runs" / "r" / "run.json").read_text(encoding="utf-8"))["status"] == "complete"
    )  # only planned


def test_a_validation_part_too_small_for_a_correlation_is_refused_before_training(tmp_path):
    """2 validation images correlate +-1 (or NaN) at every epoch: the kept model would be chosen by no
    measurement (it used to be warned, then the first epoch's model reported as the run's result)."""
    make_cache("tiny", tmp_path / "tiny", data_dir() / "tiny.h5", n=12)  # 9 training images, 3 test
    result = runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "tiny", "--out", str(tmp_path / "run")])
    assert result.exit_code == 65 and not (tmp_path / "run").exists()
    assert "the validation part that selects the kept model holds 2 of 9 training image(s)" in result.output
    assert "raise --val-fraction (now 0.2), or --select-on test" in result.output
    tested = runner.invoke(app, ["train", "vtiqa", *without(FAST, "--val-fraction"), "--data", "tiny",
                                 "--select-on", "test", "--out", str(tmp_path / "run")])  # fmt: skip
    assert tested.exit_code == 0, tested.output


def test_off_a_terminal_training_writes_one_line_per_epoch(tmp_path):
    import os
    import re
    import subprocess
    import sys

    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    command = [sys.executable, "-m", "iqa_cli", "train", "vtiqa", *FAST[:-2], "--epochs", "3", "--data", "mini",
               "--out", str(tmp_path / "run")]  # fmt: skip
    env = {**os.environ, "COLUMNS": ""}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)  # stdout/stderr: pipes
    assert done.returncode == 0, done.stderr[-2000:]
    epoch_lines = [x for x in done.stderr.splitlines() if re.search(r"split \S+ epoch \d+:", x)]
    assert len(epoch_lines) == 3, done.stderr
    assert not [x for x in done.stderr.splitlines() if "started (" in x or "%)" in x or " step " in x]
    assert "…" not in done.stdout and "random_0" in done.stdout  # the results table, whole


def test_resume_with_more_epochs_extends_a_finished_run(tmp_path):
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    out = tmp_path / "run"
    args = [a for a in FAST if a not in ("--epochs", "1")]
    assert (
        runner.invoke(app, ["train", "vtiqa", *args, "--epochs", "1", "--data", "mini", "--out", str(out)]).exit_code
        == 0
    )
    extended = runner.invoke(app, ["train", "vtiqa", "--resume", "--out", str(out), "--epochs", "3"])
    assert extended.exit_code == 0, extended.output
    log = [json.loads(x) for x in (out / "split-random_0" / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert max(r["epoch"] for r in log) == 2  # epochs 0..2
    info = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert info["status"] == "complete" and info["config"]["params"]["epochs"] == 3
    shorter = runner.invoke(app, ["train", "vtiqa", "--resume", "--out", str(out), "--epochs", "2"])
    assert shorter.exit_code != 0 and "can only extend" in shorter.output


def test_a_run_refused_by_its_data_leaves_no_run_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_RUNS", str(tmp_path / "runs"))
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    result = runner.invoke(app, ["train", "ssliqa", "--tiny", "--device", "cpu", "--data", "mini", "--labeled", "5000",
                                 "--val-fraction", "0.2", "--name", "refused"])  # fmt: skip
    assert result.exit_code != 0 and "--labeled 5000" in result.output
    assert not (tmp_path / "runs" / "refused").exists()


def test_resume_without_a_name_picks_the_newest_run_that_started_training(tmp_path, monkeypatch):
    from iqa_cli.train.runs import newest_run

    monkeypatch.setenv("IQA_RUNS", str(tmp_path / "runs"))
    base = {"method": "vtiqa", "dataset": "mini", "data": "mini", "cache": str(tmp_path / "mini.h5")}
    records = {
        "started": {
            "created": "2026-01-01T00:00:00",
            "status": "interrupted",
            "splits": {"random_0": {"status": "interrupted"}},
        },
        "never": {"created": "2026-01-02T00:00:00", "status": "failed", "splits": {"random_0": {"status": "pending"}}},
        "done": {
            "created": "2026-01-03T00:00:00",
            "status": "complete",
            "splits": {"random_0": {"status": "complete"}},
        },
    }
    for name, record in records.items():
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "run.json").write_text(json.dumps({**base, **record}), encoding="utf-8")
    assert newest_run("vtiqa", "mini", unfinished=True).name == "started"
    assert newest_run("vtiqa", str(tmp_path / "mini.h5"), unfinished=True).name == "started"  # by cache path


def test_default_run_names_started_within_a_second_do_not_collide(tmp_path, monkeypatch):
    from iqa_cli.train import runs

    monkeypatch.setenv("IQA_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(runs, "default_run_name", lambda method, dataset: "vtiqa-demo-20261205-070802")
    first = runs.run_root(method="vtiqa", dataset="demo", name=None, out=None)
    first.mkdir(parents=True)
    second = runs.run_root(method="vtiqa", dataset="demo", name=None, out=None)
    second.mkdir()
    assert second.name == "vtiqa-demo-20261205-070802-2"
    assert runs.run_root(method="vtiqa", dataset="demo", name=None, out=None).name.endswith("-3")


def test_default_run_names_claimed_at_the_same_moment_are_all_different(tmp_path, monkeypatch):
    """A SLURM job array starts many `iqa train` in one second: each picked the first free name before any
    created it, so all but one failed ("in use by another iqa job" or "a run already exists")."""
    import threading

    from iqa_cli.train import runs

    monkeypatch.setenv("IQA_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(runs, "default_run_name", lambda method, dataset: "vtiqa-demo-20261205-070802")
    start = threading.Barrier(8)
    claimed: list = []

    def job() -> None:
        start.wait()
        claimed.append(runs.run_root(method="vtiqa", dataset="demo", name=None, out=None, claim=True))

    threads = [threading.Thread(target=job) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(claimed)) == 8 and all(folder.is_dir() for folder in claimed)


def test_a_relative_iqa_home_records_absolute_paths(tmp_path, monkeypatch):
    """`IQA_HOME=h iqa train ...` recorded the cache as `h/data/mini.h5`: a resume from another folder
    opened another file by that name (or none)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IQA_HOME", "h")
    monkeypatch.delenv("IQA_RUNS", raising=False)
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    assert data_dir().is_absolute()
    assert runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "mini", "--name", "r"]).exit_code == 0
    record = json.loads((tmp_path / "h" / "runs" / "r" / "run.json").read_text(encoding="utf-8"))
    assert record["cache"] == str(tmp_path / "h" / "data" / "mini.h5")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("IQA_HOME", str(tmp_path / "h"))
    resumed = runner.invoke(app, ["train", "vtiqa", "--resume", "--name", "r", "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output


def test_combine_joins_a_job_array_s_one_split_runs_into_the_protocol_s_report(tmp_path, monkeypatch):
    """A job array trains one split per job, each in its own run: `iqa runs combine` gives the report one
    run over all the splits gives, and refuses runs that are not of one protocol."""
    monkeypatch.setenv("IQA_RUNS", str(tmp_path / "runs"))
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")

    def train(*args: str) -> None:
        result = runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "mini", *args])
        assert result.exit_code == 0, result.output

    train("--split", "all", "--name", "whole")
    train("--split", "1", "--name", "job1")
    train("--split", "0", "--name", "job0")
    combined = runner.invoke(app, ["runs", "combine", "job1", "job0", "--json"])
    assert combined.exit_code == 0, combined.output
    report = json.loads(combined.stdout)
    whole = json.loads((tmp_path / "runs" / "whole" / "results.json").read_text(encoding="utf-8"))
    assert [(r["split"], r["run"]) for r in report["splits"]] == [("random_0", "job0"), ("random_1", "job1")]
    for name in ("srcc", "plcc", "rmse"):
        assert [r[name] for r in report["splits"]] == [r[name] for r in whole["splits"]], name
        assert report["median"][name] == whole["median"][name] and report["mean"][name] == whole["mean"][name]
    text = runner.invoke(app, ["runs", "combine", "job0", "job1"])
    assert text.exit_code == 0 and "median" in text.stdout and "job0" in text.stdout and "runs:" in text.stdout
    # `iqa eval --weights job0,job1` scores the array's kept models as one run's, here and across datasets
    make_cache("other", tmp_path / "other", data_dir() / "other.h5", seed=1)
    for extra in ([], ["--cross", "other"]):
        joined = runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--weights", "job1,job0", *extra, "--json"])
        alone = runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--weights", "whole", *extra, "--json"])
        assert joined.exit_code == 0 and alone.exit_code == 0, joined.output + alone.output
        a, b = json.loads(joined.stdout), json.loads(alone.stdout)
        assert a["median"] == b["median"] and len(a["results"]) == 2, extra
        assert a["weights"] == f"{tmp_path / 'runs' / 'job1'}, {tmp_path / 'runs' / 'job0'}"
    twice = runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--weights", "job0,whole"])
    assert twice.exit_code == 2 and "split random_0 is in two runs" in twice.output

    def refused(*runs: str) -> str:
        result = runner.invoke(app, ["runs", "combine", *runs])
        assert result.exit_code != 0, result.output
        return result.output

    assert "split random_0 is in two runs" in refused("job0", "whole")
    assert "is given twice" in refused("job0", "job0")
    assert "two or more runs" in refused("job0")
    train("--split", "1", "--name", "other-lr", "--lr", "0.001")
    assert "other options: lr 0.001 (not 0.002)" in refused("job0", "other-lr")
    result = runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "other", "--split", "1", "--name", "other-data"])
    assert result.exit_code == 0, result.output
    assert "trained on other data" in refused("job0", "other-data")
    record = json.loads((tmp_path / "runs" / "job1" / "run.json").read_text(encoding="utf-8"))
    (tmp_path / "runs" / "job1" / "run.json").write_text(
        json.dumps({**record, "status": "interrupted"}), encoding="utf-8"
    )
    assert "the run is interrupted, not complete" in refused("job0", "job1")
    (tmp_path / "runs" / "job1" / "run.json").write_text(json.dumps(record), encoding="utf-8")
    results = json.loads((tmp_path / "runs" / "job1" / "results.json").read_text(encoding="utf-8"))
    results["splits"][0]["split"] = "whole_1"  # whole-dataset rounds test nothing: their figures are --watch's
    (tmp_path / "runs" / "job1" / "results.json").write_text(json.dumps(results), encoding="utf-8")
    assert "whole-dataset round whole_1, which tests nothing" in refused("job0", "job1")


def test_where_file_locks_fail_rm_refuses_a_run_marked_running(monkeypatch):
    """Without working file locks (Lustre without flock), `hold` goes on unlocked, so `iqa runs rm` would
    delete the folder of a job still training on another node. There the run's record decides."""
    import errno
    import fcntl

    from iqa_cli.home import runs_dir

    root = runs_dir() / "busy"
    (root / "split-random_0").mkdir(parents=True)
    (root / "run.json").write_text(
        json.dumps({"status": "running", "process": {"pid": 4242, "host": "node17"}}), encoding="utf-8"
    )

    def flock(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    with monkeypatch.context() as patch:
        patch.setattr(fcntl, "flock", flock)
        refused = runner.invoke(app, ["runs", "rm", "busy"])
        assert refused.exit_code == 2 and "is marked running (pid 4242 on node17)" in refused.output, refused.output
        assert root.is_dir()
    # Where locks work, a free lock says no job holds the folder: the record is a job that is gone.
    assert runner.invoke(app, ["runs", "rm", "busy"]).exit_code == 0 and not root.exists()


def test_a_run_cut_by_max_steps_is_said_to_be_shortened(tmp_path):
    """`--max-steps` stopped a run after its first epoch of 3; the table, `iqa runs list` and `iqa runs show`
    reported it as any complete run, its figures read as the protocol's."""
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    args = [*without(FAST, "--epochs"), "--data", "mini"]
    cut = runner.invoke(app, ["train", "vtiqa", *args, "--epochs", "3", "--max-steps", "2", "--name", "cut"])
    assert cut.exit_code == 0, cut.output
    said = " ".join(cut.stdout.split())
    assert "note: --max-steps stopped split(s) random_0 after 1 epoch(s), before the protocol's end" in said
    # a limit reached in the last epoch cut nothing
    whole = runner.invoke(app, ["train", "vtiqa", *args, "--epochs", "1", "--max-steps", "3", "--name", "whole"])
    assert whole.exit_code == 0 and "--max-steps stopped" not in whole.stdout
    rows = {r["name"]: r["status"] for r in json.loads(runner.invoke(app, ["runs", "list", "--json"]).stdout)}
    assert rows == {"cut": "complete (step limit)", "whole": "complete"}
    shown = runner.invoke(app, ["runs", "show", "cut"]).stdout
    assert "complete, stopped at the step limit (2) after 1 epoch(s)" in shown
    report = json.loads(runner.invoke(app, ["runs", "show", "cut", "--json"]).stdout)
    assert report["splits"]["random_0"]["result"]["stopped_because"] == "step limit (2)"
    evaluated = runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--weights", "cut"])
    assert evaluated.exit_code == 0, evaluated.output
    assert "--max-steps stopped the training of split(s) random_0 of" in " ".join(evaluated.stderr.split())
    assert "shortened" not in runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--weights", "whole"]).stderr


def test_a_sweep_of_runs_cut_by_max_steps_says_so(tmp_path):
    """The sweep table printed the medians of runs that `--max-steps` had cut short like any others."""
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    args = [*without(FAST, "--epochs"), "--data", "mini", "--epochs", "3", "--max-steps", "2"]
    result = runner.invoke(app, ["train", "vtiqa", *args, "--repeats", "2", "--out", str(tmp_path / "sweep")])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "note: --max-steps stopped 2 of the 2 runs before the protocol's end" in said
    assert "(setting=given repeat 1, setting=given repeat 2)" in said
    assert "their figures are those of shortened runs" in said


def test_combine_refuses_runs_on_caches_that_split_the_same_images_otherwise(tmp_path, monkeypatch, caplog):
    """Runs on the same images prepared twice with other split seeds (two names, or one cache prepared again
    between the jobs) were joined as one protocol: their random_0 and random_1 are not two splits of one set
    (one may be the other's random_3), yet the table named them so and took their median."""
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.cache_write import CacheOptions
    from iqa_cli.data.datasets.custom import make_spec

    monkeypatch.setenv("IQA_RUNS", str(tmp_path / "runs"))
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    spec = make_spec("reseeded", tmp_path / "mini" / "scores.csv", root=tmp_path / "mini", native_range=(1.0, 5.0))
    options = CacheOptions(workers=1, splits=2, split_seed=3, test_fraction=0.25)
    build_cache(spec, tmp_path / "mini", data_dir() / "reseeded.h5", options)
    for data, split, name in (("mini", "0", "job0"), ("reseeded", "1", "job1"), ("mini", "1", "same1")):
        result = runner.invoke(app, ["train", "vtiqa", *FAST, "--data", data, "--split", split, "--name", name])
        assert result.exit_code == 0, result.output

    def combine(*runs: str):
        return runner.invoke(app, ["runs", "combine", *runs])

    assert combine("job0", "same1").exit_code == 0
    refused = combine("job0", "job1")
    assert refused.exit_code == 2, refused.output
    assert "their caches hold other images under split random_" in refused.output
    # runs recorded before `stored_splits`: their caches, where they still hold what the runs trained, tell
    for run in ("job0", "job1", "same1"):
        record_file = tmp_path / "runs" / run / "run.json"
        record = json.loads(record_file.read_text(encoding="utf-8"))
        del record["stored_splits"]
        record_file.write_text(json.dumps(record), encoding="utf-8")
    assert "their caches hold other images under split" in combine("job0", "job1").output
    assert combine("job0", "same1").exit_code == 0
    (data_dir() / "reseeded.h5").unlink()  # mini's split random_1 is not what job1 trained: still told
    assert "their caches hold other images under split random_1" in combine("job0", "job1").output
    (data_dir() / "mini.h5").unlink()  # nothing left to tell by: said, not passed over
    caplog.set_level("WARNING")
    unchecked = combine("job0", "job1")
    assert unchecked.exit_code == 0, unchecked.output
    assert "cannot be checked against the other runs'" in " ".join((unchecked.output + caplog.text).split())


def test_combine_refuses_splits_of_two_schemes_and_checks_no_split_set_for_the_authors_splits(
    tmp_path, monkeypatch, caplog
):
    """`random_1` of one run and `vtiqa_chain_1` of another (other test parts, of other sizes) were joined
    as one protocol's splits. The authors' splits follow from the images alone: runs of them combine, and
    with no stored split left to compare, nothing is said to be unchecked."""
    monkeypatch.setenv("IQA_RUNS", str(tmp_path / "runs"))
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    for split, name in (("1", "random1"), ("vtiqa_chain_1", "chain1"), ("vtiqa_chain_2", "chain2")):
        result = runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "mini", "--split", split, "--name", name])
        assert result.exit_code == 0, result.output
    mixed = runner.invoke(app, ["runs", "combine", "random1", "chain1"])
    assert mixed.exit_code == 2, mixed.output
    assert "the runs trained splits of 2 schemes: random_1" in " ".join(mixed.output.split())
    joined = runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--weights", "random1,chain1"])
    assert "splits of 2 schemes" in joined.output and joined.exit_code == 2
    for run in ("chain1", "chain2"):  # records from before `stored_splits`, their cache gone
        record_file = tmp_path / "runs" / run / "run.json"
        record = json.loads(record_file.read_text(encoding="utf-8"))
        del record["stored_splits"]
        record_file.write_text(json.dumps(record), encoding="utf-8")
    (data_dir() / "mini.h5").unlink()
    caplog.set_level("WARNING")
    chains = runner.invoke(app, ["runs", "combine", "chain1", "chain2", "--json"])
    assert chains.exit_code == 0, chains.output
    assert [row["split"] for row in json.loads(chains.stdout)["splits"]] == ["vtiqa_chain_1", "vtiqa_chain_2"]
    assert "cannot be checked" not in chains.output + caplog.text
