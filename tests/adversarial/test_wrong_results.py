"""Cases that used to end with exit 0 and a wrong or meaningless result: each is now one error line,
checked before the work where it can be, and leaves every good file as it was."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from iqa_cli.data.cache_write import CacheOptions
from iqa_cli.home import data_dir
from iqa_cli.locks import hold
from tests.adversarial.helpers import digest, error_line, invoke
from tests.train.caches import make_cache

FAST = ["--tiny", "--freeze-epochs", "0", "--optimizer", "adamw", "--lr", "0.002", "--batch-size", "8"]
FAST += ["--dropout", "0", "--device", "cpu"]
FAST += ["--val-fraction", "0.2"]  # a validation part of at least 3 images (a correlation needs 3)


@pytest.fixture
def cache(tmp_path) -> Path:
    return make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")


def train(*args: str):
    return invoke("train", "vtiqa", *FAST, *args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "-5"], "--epochs: must be at least 1, got -5"),
        (["--epochs", "0"], "--epochs: must be at least 1, got 0"),
        (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
        (["--eval-batch-size", "0"], "--eval-batch-size: must be at least 1, got 0"),
        (["--lr-phases", "0:-1"], "--lr-phases: learning rates must be greater than 0"),
        (["--lr", "nan"], "invalid value for --lr: nan (expected float or none, not NaN)"),
        # named as typed, whole: was "invalid value for lr_phases: 'x' (expected float)"
        (["--lr-phases", "0:0.01,11:x"], "invalid value for --lr-phases: '0:0.01,11:x' (expected comma-separated"),
        (["--dropout", "1.5"], "--dropout: must be less than 1"),
        (["--val-fraction", "0"], "--val-fraction: must be greater than 0"),
        (["--momentum", "-0.1"], "--momentum: must be at least 0"),
        (["--seed", "99999999999"], "--seed: must be at most 4294967295, got 99999999999"),  # was 4.29497e+09
        (["--seed", str(2**64)], f"--seed: must be at most 4294967295, got {2**64}"),  # was 1.84467e+19
        (["--mosaic-source", "99999999999"], "--mosaic-source: must be at most 8192"),  # was torch's overflow
        (["--repeats", "0"], "--repeats: must be between 1 and 1000, got 0"),  # was read as "not given": one run
        (["--repeats", "99999999999"], "--repeats: must be between 1 and 1000"),  # planned runs until memory ran out
        (["--repeats", "10", "--seed", "4294967290"], "passes the largest seed, 4294967295"),
        (["--repeats", "500", "--sweep", "lr", "--sweep-values", "0.1,0.2,0.3"], "3 x 500 runs, more than 1000"),
    ],
)
def test_numeric_options_out_of_range_are_refused_before_any_work(cache, tmp_path, args, message):
    out = tmp_path / "run"
    line = error_line(train("--data", "mini", "--epochs", "1", *args, "--out", str(out)))
    assert message in line, line
    assert not out.exists()  # refused before a run folder was made


@pytest.mark.parametrize(
    ("phases", "message"),
    [  # 0:0.2 was never applied, and 5:0.2,5:0.3 took the last rate, without a word
        ("0:0.1,0:0.2", "lr_phases: epoch 0 is given more than one learning rate (0.1, 0.2)"),
        ("0:0.1,5:0.2,5:0.3", "lr_phases: epoch 5 is given more than one learning rate (0.2, 0.3)"),
    ],
)
def test_an_epoch_given_two_learning_rates_is_refused(cache, tmp_path, phases, message):
    from tests.cli.options import without

    out = tmp_path / "run"
    options = without(FAST, "--lr")
    line = error_line(invoke("train", "vtiqa", *options, "--data", "mini", "--lr-phases", phases, "--out", str(out)))
    assert message in line, line
    assert not out.exists()


@pytest.mark.parametrize("name", ["-1", "--x", ".hidden", "a/b", ""])
def test_a_run_name_that_could_not_be_typed_back_is_refused(cache, name):
    """`--name -1` made a run that `iqa runs show -1` reads as an unknown option."""
    result = train("--data", "mini", "--name", name)
    assert result.exit_code == 2 and ("invalid run name" in result.output or "empty value" in result.output)
    assert not (data_dir().parent / "runs" / name).exists() or not name


def test_eval_batch_size_zero_is_refused(cache):
    assert "--batch-size: must be at least 1, got 0" in error_line(invoke("eval", "vtiqa", "--data", "mini",
                                                                            "--batch-size", "0"))  # fmt: skip


def test_eval_on_a_re_prepared_cache_refuses_the_changed_split(cache, tmp_path):
    """Re-preparing with another split seed gives `random_0` other images: evaluating an older run on
    it would score training images as test images."""
    assert train("--data", "mini", "--epochs", "1", "--name", "older").exit_code == 0
    evaluated = invoke("eval", "vtiqa", "--data", "mini", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.datasets.custom import make_spec

    spec = make_spec("mini", tmp_path / "mini" / "scores.csv", root=tmp_path / "mini", native_range=(1.0, 5.0))
    # the same images, other splits
    build_cache(
        spec,
        tmp_path / "mini",
        data_dir() / "mini.h5",
        CacheOptions(workers=1, splits=2, split_seed=3, test_fraction=0.25),
    )
    line = error_line(invoke("eval", "vtiqa", "--data", "mini"))
    assert "split random_0 of this cache holds other images" in line and "recorded" in line
    run = json.loads((data_dir().parent / "runs" / "older" / "run.json").read_text(encoding="utf-8"))
    assert run["splits"]["random_0"]["digest"]  # the run recorded what it trained on


def test_eval_on_the_same_images_prepared_with_other_splits_under_another_name_is_refused(cache, tmp_path):
    """The same images prepared again with another --split-seed under another name: the split check
    compared dataset names only, so split random_0 of the copy (other test images, some the model trained
    on) was scored as the model's own test part, exit 0, with its training images "the split's own"."""
    assert train("--data", "mini", "--epochs", "1", "--name", "older").exit_code == 0
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.datasets.custom import make_spec

    spec = make_spec("reseeded", tmp_path / "mini" / "scores.csv", root=tmp_path / "mini", native_range=(1.0, 5.0))
    options = CacheOptions(workers=1, splits=2, split_seed=3, test_fraction=0.25)
    build_cache(spec, tmp_path / "mini", data_dir() / "reseeded.h5", options)
    line = error_line(invoke("eval", "vtiqa", "--data", "reseeded", "--weights", "older"))
    assert "split random_0 of this cache holds other images" in line and "recorded" in line
    every = invoke("eval", "vtiqa", "--data", "reseeded", "--weights", "older", "--cross", "reseeded", "--json")
    assert every.exit_code == 0, every.output  # on purpose, and said to include its training images
    assert all(row["includes_training_images"] for row in json.loads(every.stdout)["results"])


def test_eval_on_the_same_split_stored_at_another_size_says_so(cache, tmp_path):
    """The same images and split, prepared again at another size: the split check passed and the figures
    (other pixels than the model trained and was tested on) came out as its test result, without a word."""
    assert train("--data", "mini", "--epochs", "1", "--name", "older").exit_code == 0
    as_trained = json.loads(invoke("eval", "vtiqa", "--data", "mini", "--json").stdout)["results"][0]
    assert "resize" not in as_trained and "trained_resize" not in as_trained
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.datasets.custom import make_spec

    spec = make_spec("mini", tmp_path / "mini" / "scores.csv", root=tmp_path / "mini", native_range=(1.0, 5.0))
    options = CacheOptions(workers=1, splits=2, test_fraction=0.25, resize="20x20")
    build_cache(spec, tmp_path / "mini", data_dir() / "mini.h5", options)
    result = invoke("eval", "vtiqa", "--data", "mini", "--json", "--csv", str(tmp_path / "m.csv"))
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["results"][0]
    assert (row["trained_resize"], row["resize"]) == ("none", "20x20")
    assert "trained on mini stored at resize none, and this cache stores it at resize 20x20" in result.stderr
    assert "trained_resize" in (tmp_path / "m.csv").read_text(encoding="utf-8").splitlines()[0]
    table = invoke("eval", "vtiqa", "--data", "mini")
    assert "note: the model trained on images stored at resize none; this cache stores them at resize 20x20" in (
        table.stdout
    )


def test_eval_on_the_same_split_prepared_with_another_range_says_the_cache_changed(cache, tmp_path):
    """The same images prepared again with another declared range map the scores onto other labels; the
    warning blamed an iqa update ("iqa changed since") for what the user's own re-prepare did."""
    assert train("--data", "mini", "--epochs", "1", "--name", "older").exit_code == 0
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.datasets.custom import make_spec

    spec = make_spec("mini", tmp_path / "mini" / "scores.csv", root=tmp_path / "mini", native_range=(0.0, 10.0))
    build_cache(spec, tmp_path / "mini", data_dir() / "mini.h5", CacheOptions(workers=1, splits=2, test_fraction=0.25))
    result = invoke("eval", "vtiqa", "--data", "mini")
    assert result.exit_code == 0, result.output
    assert "trained on mini with labels 1 + 4*(Y - 1)/4 (scores), now 1 + 4*(Y - 0)/10" in result.stderr
    assert "the cache was prepared again with other options, such as --range, or iqa changed since" in result.stderr


def test_eval_on_its_dataset_prepared_again_from_other_files_says_so(cache, tmp_path):
    """The same names and scores prepared again from other files (KonIQ's other release, edited photos): the
    split, size and label checks all passed, and the figures read as the model's own test, with no word."""
    from PIL import Image

    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.datasets.custom import make_spec

    assert train("--data", "mini", "--epochs", "1", "--name", "older").exit_code == 0
    quiet = invoke("eval", "vtiqa", "--data", "mini", "--json")
    assert quiet.exit_code == 0 and "image files" not in quiet.stderr, quiet.output
    edited = tmp_path / "edited"
    shutil.copytree(tmp_path / "mini", edited)
    for path in edited.glob("*.png"):  # the same names, other pixels
        image = Image.open(path)
        image.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path)
    spec = make_spec("mini", edited / "scores.csv", root=edited, native_range=(1.0, 5.0), lower_better=False)
    build_cache(spec, edited, data_dir() / "mini.h5", CacheOptions(workers=1, splits=2, test_fraction=0.25))
    result = invoke("eval", "vtiqa", "--data", "mini", "--json")
    assert result.exit_code == 0, result.output
    assert "trained on mini with other image files than this cache has now" in " ".join(result.stderr.split())
    assert json.loads(result.stdout)["results"][0]["changed_since_training"] == "image_files"


def test_last_pt_of_another_run_is_not_resumed(cache, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    args = ["--data", "mini", "--epochs", "1"]
    assert train(*args, "--out", str(first)).exit_code == 0
    assert train(*args, "--out", str(second), "--seed", "1").exit_code == 0
    run = json.loads((second / "run.json").read_text(encoding="utf-8"))
    run["status"] = "interrupted"
    run["splits"]["random_0"]["status"] = "interrupted"
    (second / "run.json").write_text(json.dumps(run), encoding="utf-8")
    shutil.copyfile(first / "split-random_0" / "last.pt", second / "split-random_0" / "last.pt")
    before = digest(second / "split-random_0" / "last.pt")
    line = error_line(invoke("train", "vtiqa", "--resume", "--out", str(second)))
    assert "belongs to another run" in line and "last.pt" in line
    assert digest(second / "split-random_0" / "last.pt") == before
    # The same on a finished run extended by `--epochs`: refused before its record is written, so it stays
    # finished (it was marked failed, and `iqa eval` then refused its models as unfinished).
    run["status"] = "complete"
    run["splits"]["random_0"]["status"] = "complete"
    (second / "run.json").write_text(json.dumps(run), encoding="utf-8")
    line = error_line(invoke("train", "vtiqa", "--resume", "--out", str(second), "--epochs", "2"))
    assert "belongs to another run" in line
    assert json.loads((second / "run.json").read_text(encoding="utf-8")) == run


def test_a_run_resumes_through_a_link_another_spelling_or_after_a_move(cache, tmp_path):
    # A cluster reaches one folder by several paths (a link to scratch, a file system mounted elsewhere on
    # the compute nodes); a run was refused there as "another run" by its folder's path.
    first = tmp_path / "first"
    assert train("--data", "mini", "--epochs", "1", "--out", str(first)).exit_code == 0
    (tmp_path / "link").symlink_to(first)
    result = invoke("train", "vtiqa", "--resume", "--out", str(tmp_path / "link") + "/", "--epochs", "2")
    assert result.exit_code == 0, result.output
    moved = tmp_path / "moved"
    first.rename(moved)
    result = invoke("train", "vtiqa", "--resume", "--out", str(moved), "--epochs", "3")
    assert result.exit_code == 0, result.output
    assert json.loads((moved / "run.json").read_text(encoding="utf-8"))["splits"]["random_0"]["result"]["epochs"] == 3
    # A run begun before runs had ids is known by its folder, through a link too.
    run = json.loads((moved / "run.json").read_text(encoding="utf-8"))
    del run["run_id"]
    (moved / "run.json").write_text(json.dumps(run), encoding="utf-8")
    (tmp_path / "link2").symlink_to(moved)
    result = invoke("train", "vtiqa", "--resume", "--out", str(tmp_path / "link2"), "--epochs", "4")
    assert result.exit_code == 0, result.output


def test_a_second_job_on_the_same_output_fails_at_once_naming_the_holder(cache, tmp_path):
    out = tmp_path / "busy.h5"
    root = tmp_path / "mini"
    with hold(out, "cache"):
        line = error_line(invoke("prepare", "custom", "--root", root, "--csv", root / "scores.csv", "--name", "x",
                                 "--range", "1,5", "--out", out, "-j", "1"))  # fmt: skip
    assert "in use by another iqa job" in line and "pid" in line
    assert not out.exists()
    run = tmp_path / "run"
    with hold(run, "run folder"):
        line = error_line(train("--data", "mini", "--epochs", "1", "--out", str(run)))
    assert "run folder is in use by another iqa job" in line
    assert train("--data", "mini", "--epochs", "1", "--out", str(run)).exit_code == 0  # free again
    assert not (tmp_path / ".run.lock").exists()  # nothing left behind


def test_stale_partial_files_of_dead_processes_are_removed_by_the_next_write(tmp_path):
    import subprocess
    import sys

    from iqa_cli.atomic import _host, atomic_path

    final = tmp_path / "cache.h5"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".cache.h5.{_host()}.{int(dead.stdout)}.abcd1234.partial"
    stale.write_bytes(b"x" * 1000)
    foreign = tmp_path / ".cache.h5.otherhost.1.abcd1234.partial"  # another node's: not ours to judge
    foreign.write_bytes(b"y")
    with atomic_path(final) as tmp:
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new" and not stale.exists() and foreign.exists()


def test_resume_on_a_re_prepared_cache_is_refused(cache, tmp_path):
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.datasets.custom import make_spec

    out = tmp_path / "run"
    assert train("--data", "mini", "--epochs", "1", "--out", str(out)).exit_code == 0
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    run["status"] = run["splits"]["random_0"]["status"] = "interrupted"
    (out / "run.json").write_text(json.dumps(run), encoding="utf-8")
    spec = make_spec("mini", tmp_path / "mini" / "scores.csv", root=tmp_path / "mini", native_range=(1.0, 5.0))
    build_cache(
        spec,
        tmp_path / "mini",
        data_dir() / "mini.h5",
        CacheOptions(workers=1, splits=2, split_seed=7, test_fraction=0.25),
    )
    line = error_line(invoke("train", "vtiqa", "--resume", "--out", str(out)))
    assert "no longer splits its images as when this run started: split random_0 holds other images" in line
    assert json.loads((out / "run.json").read_text(encoding="utf-8"))["status"] == "interrupted"  # not marked failed


def test_resume_with_other_data_or_split_is_refused(cache, tmp_path):
    """`--resume --name R --data other --split 1` continued R on its own cache and split, exit 0: the options
    were dropped without a word."""
    out = tmp_path / "run"
    assert train("--data", "mini", "--split", "0", "--epochs", "1", "--out", str(out)).exit_code == 0
    other = make_cache("other", tmp_path / "other", data_dir() / "other.h5", seed=1)
    before = digest(out / "run.json")
    line = error_line(invoke("train", "vtiqa", "--resume", "--out", str(out), "--data", "other", "--split", "1"))
    assert f"--data (the run's cache is {data_dir() / 'mini.h5'}, given {other}: other images or scores)" in line
    assert "--split (the run's is '0', given '1')" in line
    assert digest(out / "run.json") == before
    same = invoke("train", "vtiqa", "--resume", "--out", str(out), "--data", str(cache), "--split", "0")
    assert same.exit_code == 0, same.output


def test_a_run_resumes_on_a_copy_of_its_cache_at_another_path(cache, tmp_path):
    """A run whose cache moved (scratch purged, another cluster) could not be resumed: the recorded path
    was gone and `--data NEW` was refused as not the run's own. A copy with the same images, scores and
    size policy is now accepted, and run.json records its path; another cache still is not."""
    out = tmp_path / "run"
    assert train("--data", "mini", "--split", "0", "--epochs", "1", "--out", str(out)).exit_code == 0
    moved = tmp_path / "scratch" / "mini-copy.h5"
    moved.parent.mkdir()
    shutil.move(cache, moved)
    gone = error_line(invoke("train", "vtiqa", "--resume", "--out", str(out), "--epochs", "2"))
    assert f"the run's cache {cache} is gone (moved or deleted): give it at its new place with --data" in gone
    resumed = invoke("train", "vtiqa", "--resume", "--out", str(out), "--epochs", "2", "--data", str(moved))
    assert resumed.exit_code == 0, resumed.output
    assert f"continuing on {moved}, a copy of the run's cache {cache}" in " ".join(resumed.output.split())
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert record["cache"] == str(moved) and record["status"] == "complete"
    assert record["splits"]["random_0"]["result"]["epochs"] == 2
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.datasets.custom import make_spec

    spec = make_spec("mini", tmp_path / "mini" / "scores.csv", root=tmp_path / "mini", native_range=(1.0, 5.0))
    resized = tmp_path / "resized.h5"  # the same images and scores, prepared at another size
    build_cache(spec, tmp_path / "mini", resized, CacheOptions(workers=1, splits=2, test_fraction=0.25, resize="40x40"))
    again = ["train", "vtiqa", "--resume", "--out", str(out), "--epochs", "3"]
    refused = error_line(invoke(*again, "--data", str(resized)))
    assert "prepared with size policy" in refused and "(drop them, or start a new run)" in refused
    # the same names and scores, made again from an edited image file: other content, refused
    from PIL import Image

    first = sorted((tmp_path / "mini").glob("*.png"))[0]
    pixels = np.asarray(Image.open(first)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(first)
    edited = tmp_path / "edited.h5"
    build_cache(spec, tmp_path / "mini", edited, CacheOptions(workers=1, splits=2, test_fraction=0.25))
    refused = error_line(invoke(*again, "--data", str(edited)))
    assert "the same names and scores, other image files" in refused
    # a record from before caches had file digests is compared without them
    record = json.loads((out / "run.json").read_text(encoding="utf-8"))
    del record["cache_identity"]["files_digest"]
    del record["data_identity"]["image_files"]  # recorded since, as checkpoints record it
    (out / "run.json").write_text(json.dumps(record), encoding="utf-8")
    assert invoke(*again, "--data", str(edited)).exit_code == 0


def test_a_refused_run_never_removes_a_folder_the_user_gave(cache, tmp_path):
    """`iqa train --out ~/photos` with an option the data refused deleted ~/photos and everything in it
    (the cleanup of a run that never trained removed the whole folder)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.jpg").write_bytes(b"not mine to delete")
    refused = ["--data", "mini", "--epochs", "1", "--val-fraction", "0.01"]  # a validation part of 1 image
    line = error_line(train(*refused, "--out", str(photos)))
    assert f"--out: {photos} already holds 1 file(s) or folder(s) (holiday.jpg) and is no run folder" in line
    assert (photos / "holiday.jpg").read_bytes() == b"not mine to delete"
    empty = tmp_path / "made-by-the-job-script"
    empty.mkdir()
    assert "validation part" in error_line(train(*refused, "--out", str(empty)))
    assert empty.is_dir() and not any(empty.iterdir())  # what the run wrote is gone; the folder stays
    fresh = tmp_path / "fresh"
    assert "validation part" in error_line(train(*refused, "--out", str(fresh)))
    assert not fresh.exists()
    assert train("--data", "mini", "--epochs", "1", "--out", str(empty)).exit_code == 0  # an empty folder is fine
    killed = tmp_path / "killed-in-its-first-second"  # what a run killed before its run.json leaves
    killed.mkdir()
    (killed / "config.toml").write_text("epochs = 1\n", encoding="utf-8")
    (killed / ".run.json.node1.4242.x1y2.partial").write_text("{", encoding="utf-8")
    assert train("--data", "mini", "--epochs", "1", "--out", str(killed)).exit_code == 0


def test_a_cpu_step_that_cannot_fit_is_refused_before_the_run_starts(tmp_path, monkeypatch):
    from iqa_cli.train import trainer

    monkeypatch.setattr(trainer, "available_memory_bytes", lambda: 24 * 2**30)  # this machine's size
    out = tmp_path / "dpm"
    line = error_line(invoke("train", "vipnet-dpm", "--data", "kadis", "--device", "cpu", "--out", out))
    assert "--batch-size 320" in line and "GiB on the CPU" in line and "try --batch-size" in line
    assert not out.exists()


def test_a_run_killed_from_outside_is_shown_as_killed(tmp_path):
    import subprocess
    import sys

    from iqa_cli.train.runs import effective_status, write_run

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)  # fmt: skip
    info = {"status": "running"}
    write_run(tmp_path, info)
    assert (
        effective_status(json.loads((tmp_path / "run.json").read_text(encoding="utf-8"))) == "running"
    )  # this process
    info["process"]["pid"] = dead
    assert effective_status(info) == "killed"
    info["process"]["host"] = "another-node"
    assert effective_status(info) == "running"  # cannot be checked from here


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states in /proc")
def test_a_killed_run_whose_pid_lives_on_is_shown_as_killed(tmp_path):
    """`iqa runs list` said "running" for a run whose process was killed but not yet reaped (a zombie: its
    parent, a batch script, still runs), and for one whose pid another process holds now (after a reboot,
    or a long while later): only the pid was checked."""
    import socket
    import subprocess
    import sys

    from iqa_cli.processes import this_process
    from iqa_cli.train.runs import effective_status

    me = this_process()
    assert {"boot_id", "start_ticks"} <= set(me)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        info = {"status": "running", "process": {**me, "pid": child.pid, "start_ticks": None}}
        assert effective_status(info) == "running"  # alive, and no start time to compare
        other = {"status": "running", "process": {**me, "pid": child.pid}}  # my start time, not the child's
        assert effective_status(other) == "killed"  # the pid is held by another process
        rebooted = {"status": "running", "process": {"pid": child.pid, "host": socket.gethostname(), "boot_id": "x"}}
        assert effective_status(rebooted) == "killed"
        child.kill()
        time.sleep(0.5)  # dead, not reaped: a zombie
        assert effective_status(info) == "killed"
    finally:
        child.kill()
        child.wait()


def test_eval_after_training_on_a_computed_split_evaluates_that_split(cache):
    """A run trained on `vtiqa_chain_1` is evaluated on it by default, not an empty table with exit 0."""
    assert train("--data", "mini", "--epochs", "1", "--split", "vtiqa_chain_1", "--name", "chain").exit_code == 0
    result = invoke("eval", "vtiqa", "--data", "mini", "--json")
    assert result.exit_code == 0, result.output

    def refuse(value):
        raise ValueError(f"not strict JSON: {value}")

    report = json.loads(result.stdout, parse_constant=refuse)  # NaN/Infinity would be refused
    assert [r["split"] for r in report["results"]] == ["vtiqa_chain_1"] and report["results"][0]["n"] > 0


def test_json_output_is_strict():
    from iqa_cli.jsonio import strict as strict_json

    doc = strict_json({"a": float("nan"), "b": [1.0, float("inf"), {"c": -float("inf")}], "d": "x"})
    assert doc == {"a": None, "b": [1.0, None, {"c": None}], "d": "x"}
    json.dumps(doc, allow_nan=False)
    # NumPy scalars and 0-d tensors are numbers (a NaN one is null), not their str().
    import numpy as np
    import torch

    from iqa_cli.jsonio import dumps

    assert json.loads(dumps([np.float32(0.5), np.int64(3), torch.tensor(0.25), np.float64("nan")])) == [
        0.5, 3, 0.25, None
    ]  # fmt: skip


def test_a_step_decay_that_would_grow_the_learning_rate_is_refused(cache, tmp_path):
    """SSL-IQA's --lr-gamma 2 doubled the learning rate at every step, silently; it is a decay's factor."""
    result = invoke("train", "ssliqa", "--tiny", "--data", "mini", "--lr-gamma", "2", "--out", str(tmp_path / "r"))
    assert "--lr-gamma: must be at most 1, got 2" in error_line(result)


def test_a_label_std_wider_than_the_scale_is_refused(cache, tmp_path):
    """SSL-IQA's `--label-std 99999999999` made every derived 5-bin label the same flat distribution: a
    run trained toward one constant target, exit 0. A std is at most the 1-5 scale's width."""
    result = invoke("train", "ssliqa", "--tiny", "--data", "mini", "--label-std", "5", "--out", str(tmp_path / "r"))
    assert "--label-std: must be at most 4, got 5" in error_line(result)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("bar", "said"), [("40", "must be at most 5, got 40"), ("1", "must be greater than 1, got 1")])
def test_a_low_quality_bar_off_the_training_scale_is_refused(cache, tmp_path, bar, said):
    """IEIT's `--lq-threshold 40` (a bar on LIVE Challenge's 0-100 scale, not the 1-5 training scale) put
    every image below it: the lq_* columns were the whole part's figures, titled low-quality."""
    result = invoke("train", "ieit", "--tiny", "--data", "mini", "--lq-threshold", bar, "--out", str(tmp_path / "r"))
    assert f"--lq-threshold: {said}" in error_line(result)
    assert not (tmp_path / "r").exists()


def test_an_endless_k_means_stand_in_is_refused(cache, tmp_path):
    """AL-IQA's `--distill-repeats 99999999999` ran k-means repeat after repeat, without an end."""
    result = invoke("train", "aliqa", "--tiny", "--data", "mini", "--distill-repeats", "99999999999")
    assert "--distill-repeats: must be at most 256, got 99999999999" in error_line(result)


def test_a_cache_that_left_images_out_says_so_in_training_and_evaluation(tmp_path):
    """A cache prepared with --skip-bad holds part of its dataset; `iqa train` and `iqa eval` printed its
    figures as the dataset's, without a word (a KonIQ-10k SRCC on 10,000 of its 10,073 images reads as
    the usual one)."""
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.datasets.custom import make_spec
    from tests.train.caches import write_folder

    folder = write_folder(tmp_path / "mini", n=35)
    for name in ("img000.png", "img001.png", "img002.png"):
        (folder / name).write_bytes(b"not an image")
    spec = make_spec("mini", folder / "scores.csv", root=folder, native_range=(1.0, 5.0), lower_better=False)
    options = CacheOptions(workers=1, splits=1, test_fraction=0.25, skip_bad=True)
    build_cache(spec, folder, data_dir() / "mini.h5", options)
    said = "mini left out 3 of its 35 images (prepared with --skip-bad; `iqa prepare inspect mini` lists them)"
    trained = train("--data", "mini", "--epochs", "1", "--name", "part", "--json")
    assert trained.exit_code == 0, trained.output
    assert said in " ".join(trained.stderr.split())
    assert json.loads(trained.stdout)["left_out_images"] == 3
    result = invoke("eval", "vtiqa", "--data", "mini", "--json")
    assert result.exit_code == 0, result.output
    assert said in " ".join(result.stderr.split())
    (row,) = json.loads(result.stdout)["results"]
    assert row["left_out_images"] == 3
    table = invoke("eval", "vtiqa", "--data", "mini", "--csv", str(tmp_path / "m.csv"))
    assert "note: the cache of mini left out 3 of its images" in " ".join(table.stdout.split())
    header, first = (tmp_path / "m.csv").read_text(encoding="utf-8").splitlines()[:2]
    assert first.split(",")[header.split(",").index("left_out_images")] == "3"
    make_cache("whole", tmp_path / "whole", data_dir() / "whole.h5", n=32, seed=1)  # other images
    watched = invoke("train", "vtiqa", *FAST, "--data", "whole", "--epochs", "1", "--watch", "mini")
    assert watched.exit_code == 0, watched.output
    assert "--watch mini: " + said in " ".join(watched.stderr.split())
