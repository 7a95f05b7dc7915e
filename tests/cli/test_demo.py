"""`iqa demo` at a small size: the photo folder, the cache, the run, the report and the next commands."""

from __future__ import annotations

import csv
import json
import math
import re
import shlex
from pathlib import Path

from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.data.cache import open_cache

runner = CliRunner()
SMALL = ["--photos", "4", "--tiles", "2", "--levels", "2", "--epochs", "2"]


def test_demo_builds_trains_evaluates_and_prints_working_commands(tmp_path, _isolated_home):
    result = runner.invoke(app, ["demo", *SMALL, "--workdir", str(tmp_path / "demo"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["images"] == 4 * 2 * (1 + 3 * 2)  # tiles x (clean + 3 distortions x levels)
    folder = Path(report["folder"])
    rows = list(csv.DictReader((folder / "scores.csv").open()))
    assert len(rows) == report["images"] and {float(r["score"]) for r in rows} == {5.0, 3.0, 1.0}
    with open_cache(report["cache"]) as cache:
        assert len(cache) == report["images"] and cache.attrs["reference_disjoint"]
        parts = cache.split("random_0")
        # Reference-disjoint: no photograph has tiles on both sides (its tiles overlap, so a tile-level
        # split had the same pixels on both sides).
        refs = [set(int(cache.ref_ids[i]) for i in parts[p]) for p in ("train", "test")]
        photos = [{cache.names[i].split("/")[0] for i in parts[p]} for p in ("train", "test")]
        assert not refs[0] & refs[1] and not photos[0] & photos[1] and photos[1]
        ref_of_photo = {(name.split("/")[0], int(ref)) for name, ref in zip(cache.names, cache.ref_ids, strict=True)}
        assert len(ref_of_photo) == 4  # one reference per photograph, whatever the split drew
    metrics = report["metrics"]
    assert metrics["n"] > 0 and all(math.isfinite(metrics[k]) for k in ("srcc", "plcc", "rmse"))
    assert metrics["logistic_fit"] in ("ok", "fallback")
    assert (Path(report["run"]) / "split-random_0" / "best.safetensors").is_file()
    assert set(report["seconds"]) == {"dataset", "prepare", "train", "evaluate", "total"}
    # The first suggested command runs as printed.
    evaluate = shlex.split(report["commands"][0])
    assert evaluate[:3] == ["iqa", "eval", "vtiqa"]
    out = tmp_path / "p.csv"
    again = runner.invoke(app, [*evaluate[1:-1], str(out), "--device", "cpu"])
    assert again.exit_code == 0, again.output
    assert len(list(csv.DictReader(out.open()))) == metrics["n"]
    table = runner.invoke(app, ["demo", *SMALL, "--workdir", str(tmp_path / "demo2")])
    assert table.exit_code == 0 and "srcc" in table.stdout and "next:" in table.stdout


def test_the_demo_never_writes_among_a_user_s_files(tmp_path, _isolated_home):
    """`iqa demo --workdir ~` wrote its images and `scores.csv` into an existing `~/photos`."""
    photos = tmp_path / "home" / "photos"
    photos.mkdir(parents=True)
    (photos / "scores.csv").write_text("holiday.jpg,4.5\n", encoding="utf-8")
    (photos / "holiday.jpg").write_bytes(b"mine")
    result = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "home")])
    assert result.exit_code == 2, result.output
    assert "holds files the demo did not write (holiday.jpg, scores.csv)" in result.output
    (photos / "holiday.jpg").unlink()  # a score list alone is still the user's
    alone = CliRunner().invoke(app, ["demo", "--workdir", str(tmp_path / "home")])
    assert alone.exit_code == 2 and "holds files the demo did not write (scores.csv)" in alone.output
    (photos / "holiday.jpg").write_bytes(b"mine")
    assert (photos / "scores.csv").read_text(encoding="utf-8") == "holiday.jpg,4.5\n" and sorted(
        p.name for p in photos.iterdir()
    ) == [
        "holiday.jpg",
        "scores.csv",
    ]


def test_an_earlier_demo_s_folder_is_reused(tmp_path):
    from iqa_cli.train.demo import PHOTOS, _check_demo_folder

    folder = tmp_path / "photos"
    (folder / PHOTOS[0]).mkdir(parents=True)
    (folder / "scores.csv").write_text(f"name,score\n{PHOTOS[0]}/{PHOTOS[0]}_t0_clean0.png,5\n", encoding="utf-8")
    _check_demo_folder(folder)  # what an earlier `iqa demo` wrote: no error


def test_a_stopped_demo_exits_with_the_signal_s_code_in_one_line(tmp_path, _isolated_home):
    """A SIGTERM during the demo's training ended as an unforeseen error (exit 1, `TrainingInterrupted`)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "IQA_DEBUG_SIGNAL_AT_STEP": "2", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "iqa_cli", "demo", *SMALL, "--workdir", str(tmp_path / "demo")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 143, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.match(r"error: stopped by SIGTERM at epoch \d+ step 2;", errors[0]), done.stderr
    assert "TrainingInterrupted" not in done.stderr and "--debug" not in errors[0]


def test_a_demo_of_two_photographs_is_refused_before_any_is_written(tmp_path, _isolated_home):
    """With one photograph per side, training had none left to validate on, and failed after the writing."""
    result = runner.invoke(app, ["demo", "--photos", "2", "--workdir", str(tmp_path / "demo")])
    assert result.exit_code == 2 and "demo size out of range: 3..15 photos" in result.output
    assert not (tmp_path / "demo").exists()


def test_a_demo_of_millions_of_images_is_refused_before_any_is_written(tmp_path, _isolated_home):
    """`iqa demo --tiles 99999` began writing 19.5 million files."""
    result = runner.invoke(app, ["demo", "--tiles", "99999", "--workdir", str(tmp_path / "demo")])
    assert result.exit_code == 2 and "makes 19,499,805 demo images, more than 20,000" in result.output
    assert not (tmp_path / "demo").exists()


def test_a_workdir_that_is_a_file_is_refused_in_one_line_naming_the_option(tmp_path, _isolated_home):
    """`--workdir FILE` failed as an I/O error (exit 74) naming FILE/photos: "Not a directory"."""
    taken = tmp_path / "notes.txt"
    taken.write_text("mine", encoding="utf-8")
    for workdir in (taken, taken / "below"):
        result = runner.invoke(app, ["demo", *SMALL, "--workdir", str(workdir)])
        assert result.exit_code == 2, result.output
        assert f"error: --workdir: {taken} is a file; expected a folder" in result.output
    assert taken.read_text(encoding="utf-8") == "mine"


def test_the_demo_never_replaces_a_user_s_dataset_named_demo(tmp_path, _isolated_home):
    """`iqa demo` wrote its cache over `data/demo.h5` whatever it held: a user's own dataset prepared with
    `iqa prepare custom --name demo` was replaced without a word. An earlier demo's cache still is."""
    from iqa_cli.home import data_dir
    from tests.train.caches import make_cache

    mine = make_cache("demo", tmp_path / "my-photos", data_dir() / "demo.h5")
    before = mine.read_bytes()
    refused = CliRunner().invoke(app, ["demo", *SMALL, "--workdir", str(tmp_path / "work")])
    assert refused.exit_code == 2 and mine.read_bytes() == before, refused.output
    said = f"holds the cache 'demo' of 32 image(s) prepared from {tmp_path / 'my-photos'}, not a demo's"
    assert said in refused.output
    assert not (tmp_path / "work").exists()  # refused before any work
    mine.unlink()
    for _ in range(2):  # the second run replaces the first run's cache
        done = CliRunner().invoke(app, ["demo", *SMALL, "--workdir", str(tmp_path / "work")])
        assert done.exit_code == 0, done.output
