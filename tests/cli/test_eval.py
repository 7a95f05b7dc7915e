"""`iqa eval vtiqa` end to end on small real caches: intra-dataset (a run's splits, or one checkpoint on
the split it was trained on), cross-dataset, the JSON / CSV / per-image outputs, and the bad inputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.home import data_dir
from iqa_cli.models.checkpoint import read_state_dict, save_checkpoint
from tests.cli.options import without
from tests.train.caches import make_cache
from tests.train.fakes import constant_predictions_on_call

runner = CliRunner()
FAST = ["--tiny", "--freeze-epochs", "0", "--optimizer", "adamw", "--lr", "0.002", "--batch-size", "8"]
FAST += ["--dropout", "0", "--device", "cpu", "--epochs", "1"]
FAST += ["--val-fraction", "0.2"]  # a validation part of at least 3 images (a correlation needs 3)
METRICS = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Two caches in one IQA_HOME and a tiny VT-IQA run on both splits of the first."""
    import os

    home = tmp_path_factory.mktemp("eval_home")
    previous = os.environ.get("IQA_HOME")
    os.environ["IQA_HOME"] = str(home)
    try:
        root = tmp_path_factory.mktemp("eval_data")
        make_cache("mini", root / "mini", data_dir() / "mini.h5")
        make_cache("other", root / "other", data_dir() / "other.h5", n=20, seed=3)
        run = home / "runs" / "mini-run"
        result = runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "mini", "--split", "all", "--out", str(run)])
        assert result.exit_code == 0, result.output
    finally:
        if previous is None:
            os.environ.pop("IQA_HOME", None)
        else:
            os.environ["IQA_HOME"] = previous
    return {"home": home, "run": run}


@pytest.fixture(autouse=True)
def _home(trained, monkeypatch):
    monkeypatch.setenv("IQA_HOME", str(trained["home"]))


def evaluate(*args: str):
    return runner.invoke(app, ["eval", "vtiqa", "--device", "cpu", *args])


def one_error_line(result) -> str:
    assert result.exit_code != 0, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def test_newest_run_on_its_own_splits_with_json(trained):
    result = evaluate("--data", "mini", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [r["split"] for r in report["results"]] == ["random_0", "random_1"]
    for row in report["results"]:
        assert row["dataset"] == "mini" and row["n"] == 8 and row["trained_split"] == row["split"]
        assert all(isinstance(row[m], float) for m in METRICS)
    assert report["median"]["splits"] == 2 and "validation" in report["selection"]
    # Median, mean and standard deviation over splits (the statistics the authors' scripts report).
    values = [r["srcc"] for r in report["results"]]
    assert report["median"]["srcc"] == pytest.approx(np.median(values), abs=1e-12)
    assert report["mean"]["srcc"] == pytest.approx(np.mean(values), abs=1e-12)
    assert report["std"]["srcc"] == pytest.approx(np.std(values), abs=1e-12)
    text = evaluate("--data", "mini")
    assert "median" in text.stdout and "mean ± std" in text.stdout
    # The same numbers as the run's own final test of each kept model.
    results = json.loads((trained["run"] / "results.json").read_text(encoding="utf-8"))["splits"]
    for ours, theirs in zip(report["results"], results, strict=True):
        assert ours["srcc"] == pytest.approx(theirs["srcc"], abs=1e-12)
        assert ours["plcc"] == pytest.approx(theirs["plcc"], abs=1e-12)


def test_a_run_is_evaluated_on_its_own_dataset_without_data(trained):
    """`iqa eval vtiqa --weights RUN` (and `iqa eval vtiqa`, the newest run) refused without --data,
    though the run records the cache it trained on."""
    given = evaluate("--data", "mini", "--json")
    for args in (["--weights", str(trained["run"])], []):
        result = evaluate(*args, "--json")
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["results"] == json.loads(given.stdout)["results"]
        assert "evaluating on the run's own dataset" in result.stderr
    weights = trained["run"] / "split-random_0" / "best.safetensors"  # a file records no cache
    line = one_error_line(evaluate("--weights", str(weights)))
    assert "--data (or --cross) is required with these --weights" in line


def test_a_resume_state_is_scored_as_the_last_epoch_s_model_not_an_unknown_one(trained):
    """`--weights .../last.pt` was titled "kept model selection unknown (weights without iqa metadata)"."""
    last = trained["run"] / "split-random_0" / "last.pt"
    result = evaluate("--data", "mini", "--weights", str(last), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["selection"] == "model of the last finished epoch (last.pt, a resume state; not a kept model)"
    assert report["results"][0]["selected_on"] == "last" and report["results"][0]["split"] == "random_0"


def test_a_newer_whole_dataset_run_is_passed_over_for_a_test_on_the_dataset(tmp_path, monkeypatch):
    """`iqa eval vtiqa --data mini` took the newest run even when it trained on every image (`--split
    whole_1`): an error about an empty test part instead of the newest run that has one."""
    monkeypatch.setenv("IQA_HOME", str(tmp_path / "home"))
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    make_cache("other", tmp_path / "other", data_dir() / "other.h5", n=20, seed=3)
    base = ["train", "vtiqa", *FAST, "--data", "mini"]
    whole = [*[a for a in base if a not in ("--val-fraction", "0.2")], "--split", "whole_1", "--watch", "other"]
    assert runner.invoke(app, whole + ["--name", "all-of-it"]).exit_code == 0
    alone = evaluate("--data", "mini")
    line = one_error_line(alone)
    assert "all-of-it, trained on every image (whole_1): nothing is held out to test it on" in line
    assert runner.invoke(app, [*base, "--name", "held-out"]).exit_code == 0
    assert runner.invoke(app, whole + ["--name", "all-again"]).exit_code == 0  # the newest again
    result = evaluate("--data", "mini", "--json")
    assert result.exit_code == 0, result.output
    assert "held-out" in json.loads(result.stdout)["weights"]
    assert "whole-dataset run(s) passed over (they hold nothing out to test)" in result.stderr
    assert "all-again" in result.stderr
    cross = evaluate("--data", "mini", "--cross", "other", "--json")  # scoring it elsewhere is what it is for
    assert cross.exit_code == 0 and "all-again" in json.loads(cross.stdout)["weights"]


def test_a_split_left_unmeasured_is_an_error_naming_it(trained, monkeypatch):
    """One split of two with constant predictions (no finite SRCC): a median of the other alone would
    stand for both, so the evaluation fails naming the split; the measured one still scores alone."""
    constant_predictions_on_call(monkeypatch, 2)  # the second split's
    line = one_error_line(evaluate("--data", "mini", "--json"))
    assert "1 of 2 splits gave no finite srcc (random_1;" in line and "--split" in line
    alone = evaluate("--data", "mini", "--split", "0", "--json")
    assert alone.exit_code == 0, alone.output


def test_cross_on_live_challenge_scores_every_row_as_the_vtiqa_authors_did(trained, tmp_path):
    """VT-IQA's cross-dataset test reads the whole LIVE Challenge cache, its 7 subject-training images
    included (VIPNet leaves them out: tests/cli/test_vipnet.py)."""
    from tests.data.fixtures import FIXTURES

    FIXTURES["livew"](tmp_path / "root")
    assert runner.invoke(app, ["prepare", "livew", "--root", str(tmp_path / "root"), "--splits", "1"]).exit_code == 0
    result = evaluate("--data", "mini", "--cross", "livew", "--json")
    assert result.exit_code == 0, result.output
    assert [row["n"] for row in json.loads(result.stdout)["results"]] == [17, 17]  # both splits' models


def test_cross_on_the_training_dataset_says_it_is_no_cross_dataset_result(trained, tmp_path):
    """--cross scores every image on purpose, but onto the dataset the model trained on (by name, or a copy
    of its cache under another name: the same split, same images) that is said, in the log and the report."""
    result = evaluate("--data", "mini", "--cross", "mini", "--json")
    assert result.exit_code == 0, result.output
    assert all(row["includes_training_images"] for row in json.loads(result.stdout)["results"])
    assert "its training images included, so this is no cross-dataset result" in " ".join(result.stderr.split())
    # the note under the table counts them as what they are (it spoke of "the test part of split(s) all")
    table = " ".join(evaluate("--data", "mini", "--cross", "mini").stdout.split())
    copies = json.loads(result.stdout)["results"][0]["test_copies_of_training"]
    assert f"note: of the images scored, {copies} of 32 (for each of the 2 models) are the training images" in table
    assert "the split's own" not in table and copies > 0
    # --drop-seen leaves every file the model trained and selected on out: the rest is its test part, on its
    # own dataset (no cross-dataset result), and no longer flagged as holding training images
    unseen = evaluate("--data", "mini", "--cross", "mini", "--drop-seen", "--json")
    assert unseen.exit_code == 0, unseen.output
    rows = json.loads(unseen.stdout)["results"]
    tested = evaluate("--data", "mini", "--json")
    assert [row["n"] for row in rows] == [row["n"] for row in json.loads(tested.stdout)["results"]]
    assert all(row["own_dataset"] and "includes_training_images" not in row for row in rows)
    shown = " ".join(evaluate("--data", "mini", "--cross", "mini", "--drop-seen").stdout.split())
    assert "the model's own dataset without its training images (--drop-seen): no cross-dataset result" in shown
    make_cache("mini_again", tmp_path / "again", data_dir() / "mini_again.h5")  # same images and splits
    copy = evaluate("--data", "mini", "--cross", "mini_again")
    assert copy.exit_code == 0, copy.output
    assert "no cross-dataset result" in " ".join(copy.stdout.split())  # the table's title
    # the log said the model "was trained on mini_again": the copy's name, not the dataset it trained on
    said = " ".join(copy.stderr.split())
    assert "was trained on mini (split random_0; as mini_again here)" in said and "trained on mini_again" not in said
    # a copy prepared with other splits (no split matches) is the same images: recognised by its image list
    from tests.train.caches import write_folder

    folder = write_folder(tmp_path / "reseeded")
    args = ["--root", str(folder), "--csv", str(folder / "scores.csv"), "--range", "1,5", "--split-seed", "7"]
    prepared = runner.invoke(app, ["prepare", "custom", *args, "--name", "reseeded", "--splits", "2"])
    assert prepared.exit_code == 0, prepared.output
    reseeded = evaluate("--data", "mini", "--cross", "reseeded", "--json")
    assert reseeded.exit_code == 0, reseeded.output
    assert all(row["includes_training_images"] for row in json.loads(reseeded.stdout)["results"])
    other = evaluate("--data", "mini", "--cross", "other", "--json")
    assert not any("includes_training_images" in row for row in json.loads(other.stdout)["results"])
    assert "no cross-dataset result" not in other.stderr


def test_a_distorted_image_set_is_no_quality_dataset(trained, tmp_path, monkeypatch):
    """`iqa prepare distorted` caches hold distortion levels as stand-in scores: a quality model's SRCC
    against them read as a cross-dataset result. `--cross all` used to take them, and IEIT's enhanced
    companion files, whose opening then failed the whole command."""
    import shutil

    import h5py

    home = tmp_path / "home"  # a data folder of its own: other tests leave caches in the module's
    (home / "data").mkdir(parents=True)
    for name in ("mini", "other"):
        shutil.copy(data_dir() / f"{name}.h5", home / "data" / f"{name}.h5")
    monkeypatch.setenv("IQA_HOME", str(home))
    levels = make_cache("levels", tmp_path / "levels", data_dir() / "levels.h5", n=12)
    with h5py.File(levels, "r+") as handle:  # as `iqa prepare distorted` declares its scores
        handle.attrs["score_type"] = "level"
    run = ("--weights", str(trained["run"]), "--split", "0")
    refused = evaluate("--cross", "levels", *run)
    assert "is a distorted-image cache: its scores are distortion levels, not quality scores" in one_error_line(refused)
    assert "preparing views" not in refused.output
    trained_on_levels = runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "levels", "--out", str(tmp_path / "r")])
    assert "is a distorted-image cache" in one_error_line(trained_on_levels)
    (data_dir() / "mini.enhanced.h5").write_bytes(b"IEIT's enhanced images of mini")
    every = evaluate("--cross", "all", *run, "--json")
    assert every.exit_code == 0, every.output
    assert sorted(r["dataset"] for r in json.loads(every.stdout)) == ["mini", "other"]
    assert "leaves out levels.h5 (distorted images: distortion levels), mini.enhanced.h5" in every.stderr


def test_output_files_that_cannot_be_written_are_refused_before_the_evaluation(trained, tmp_path):
    for option in ("--csv", "--per-image", "--plot"):
        target = tmp_path / "folder.png"
        target.mkdir(exist_ok=True)
        line = one_error_line(evaluate("--data", "mini", option, str(target)))
        assert line == f"error: {option}: {target} is a folder; give a file name"
    same = tmp_path / "out.csv"
    line = one_error_line(evaluate("--data", "mini", "--csv", str(same), "--per-image", str(same)))
    assert "--csv and --per-image both name" in line and not same.exists()


def test_a_half_precision_evaluation_that_tied_predictions_says_so():
    from iqa_cli.train.precision import low_precision_ties

    tied = np.array([3.0, 3.015625, 3.015625, 2.5])  # bf16 steps: two images share a score
    note = low_precision_ties(tied, torch.bfloat16)
    assert note is not None and note.startswith("bf16 evaluation gave 3 distinct predictions for 4 images")
    assert low_precision_ties(tied, None) is None  # float32: ties are the model's own
    assert low_precision_ties(np.array([3.0, 3.1]), torch.float16) is None


def test_bf16_evaluation_warns_about_its_ties(trained, monkeypatch):
    import iqa_cli.train.evaluate as evaluate_module

    pairs = lambda *a, **k: 3.0 + np.arange(a[4].size) // 2 / 64  # noqa: E731  (bf16-like steps, tied in pairs)
    monkeypatch.setattr(evaluate_module, "predict_scores", pairs)
    result = evaluate("--data", "mini", "--split", "1", "--amp", "bf16")
    assert result.exit_code == 0, result.output
    assert "bf16 evaluation gave 4 distinct predictions for 8 images" in " ".join(result.output.split())
    assert "bf16 evaluation" in result.stdout  # the table's title says how it was computed
    report = json.loads(evaluate("--data", "mini", "--split", "1", "--amp", "bf16", "--json").stdout)
    assert (report["device"], report["precision"]) == ("cpu", "bf16")
    report = json.loads(evaluate("--data", "mini", "--split", "1", "--json").stdout)
    assert (report["device"], report["precision"]) == ("cpu", "float32")


def test_csv_and_per_image_files_agree_with_scipy(trained, tmp_path):
    table, per_image = tmp_path / "m.csv", tmp_path / "p.csv"
    result = evaluate("--data", "mini", "--split", "1", "--csv", str(table), "--per-image", str(per_image))
    assert result.exit_code == 0, result.output
    assert "random_1" in result.stdout and "srcc" in result.stdout  # the rich table
    rows = list(csv.DictReader(table.open()))
    assert [r["split"] for r in rows] == ["random_1", "median", "mean", "std"]
    assert rows[0]["logistic_fit"] in ("ok", "fallback") and rows[1]["logistic_fit"] == ""
    images = list(csv.DictReader(per_image.open()))
    assert len(images) == 8 and {r["split"] for r in images} == {"random_1"}
    pred = np.array([float(r["prediction"]) for r in images])
    label = np.array([float(r["label"]) for r in images])
    assert float(rows[0]["srcc"]) == pytest.approx(stats.spearmanr(pred, label)[0], abs=1e-5)
    assert float(rows[0]["plcc"]) == pytest.approx(stats.pearsonr(pred, label)[0], abs=1e-5)


def test_two_caches_of_one_dataset_name_are_told_apart_in_every_output(trained, tmp_path):
    """`--cross other,other_copy` (a copy of a cache under another file name, or one dataset prepared at two
    sizes) printed two tables "on other", and its JSON, --csv and --per-image rows named no cache: no way
    to tell which figures came from which file."""
    import shutil

    copy = data_dir() / "other_copy.h5"
    shutil.copy(data_dir() / "other.h5", copy)
    try:
        table, per_image = tmp_path / "m.csv", tmp_path / "p.csv"
        args = ["--data", "mini", "--cross", "other,other_copy", "--csv", str(table), "--per-image", str(per_image)]
        shown = evaluate(*args)
        assert shown.exit_code == 0, shown.output
        assert "on other (cache other_copy.h5) (cross-dataset)" in " ".join(shown.stdout.split())
        reports = json.loads(evaluate("--data", "mini", "--cross", "other,other_copy", "--json").stdout)
        assert [Path(r["cache"]).name for r in reports] == ["other.h5", "other_copy.h5"]
        assert {Path(r["cache"]).name for r in csv.DictReader(table.open())} == {"other.h5", "other_copy.h5"}
        assert {Path(r["cache"]).name for r in csv.DictReader(per_image.open())} == {"other.h5", "other_copy.h5"}
    finally:
        copy.unlink()


def test_one_checkpoint_is_tested_on_the_split_it_was_trained_on(trained):
    weights = trained["run"] / "split-random_1" / "best.safetensors"
    result = evaluate("--data", "mini", "--weights", str(weights), "--json")
    assert result.exit_code == 0, result.output
    assert [r["split"] for r in json.loads(result.stdout)["results"]] == ["random_1"]
    other = evaluate("--data", "mini", "--weights", str(weights), "--split", "0", "--json")
    assert other.exit_code == 65 and other.stdout == ""  # before any work: no result, not a figure with a warning
    line = one_error_line(other)
    assert "test images of split random_0 are images" in line and "(split random_1): that is no test result" in line
    assert "--cross mini to score every image on purpose" in line


def test_one_checkpoint_on_every_split_is_refused_before_any_work(trained):
    """`--split all` with one split's model would score it on the other splits' test parts, which hold
    its training images: no figure at all, rather than a median over them."""
    weights = trained["run"] / "split-random_0" / "best.safetensors"
    result = evaluate("--data", "mini", "--weights", str(weights), "--split", "all")
    line = one_error_line(result)
    assert "test images of split random_1 are images" in line and result.exit_code == 65
    assert "evaluating mini split" not in result.output and result.stdout == ""


def test_a_renamed_copy_of_the_training_cache_is_the_training_dataset(trained, tmp_path):
    """The same images under another dataset name: the checkpoint is still tested on its own split, and
    another split holding its training images is still refused (the images digest tells them apart)."""
    import shutil

    import h5py

    copy = shutil.copy(data_dir() / "mini.h5", data_dir() / "renamed.h5")
    try:
        with h5py.File(copy, "r+") as handle:
            handle.attrs["dataset"] = "renamed"
        weights = str(trained["run"] / "split-random_1" / "best.safetensors")
        own = evaluate("--data", "renamed", "--weights", weights, "--json")
        assert own.exit_code == 0, own.output
        assert [r["split"] for r in json.loads(own.stdout)["results"]] == ["random_1"]
        other = evaluate("--data", "renamed", "--weights", weights, "--split", "0")
        assert "test images of split random_0 are images" in one_error_line(other)
    finally:
        Path(copy).unlink()


def test_too_few_images_to_correlate_is_refused_before_any_work(trained, tmp_path):
    make_cache("two", tmp_path / "two", data_dir() / "two.h5", n=2)
    result = evaluate("--data", "mini", "--cross", "two", "--split", "0")
    line = one_error_line(result)
    assert "the dataset holds 2 image(s), and a correlation needs at least 3" in line and result.exit_code == 65
    assert "preparing views" not in result.output


def test_an_unfinished_run_is_no_result(trained):
    """A preempted run's best model so far used to be scored as the run's result, by default as the newest
    run on the dataset: now a run is evaluated once its splits finished, or split by split."""
    import shutil

    copy = trained["home"] / "runs" / "preempted"
    shutil.copytree(trained["run"], copy)
    try:
        info = json.loads((copy / "run.json").read_text(encoding="utf-8"))
        info.update(status="interrupted", created="2999-01-01T00:00:00+00:00")  # the newest run
        info["splits"]["random_1"]["status"] = "interrupted"
        (copy / "run.json").write_text(json.dumps(info), encoding="utf-8")
        line = one_error_line(evaluate("--data", "mini", "--weights", str(copy)))
        assert f"run {copy} has not finished (random_1 interrupted)" in line
        assert "--resume --out" in line and "--split random_0 scores what finished" in line
        finished = evaluate("--data", "mini", "--weights", str(copy), "--split", "0", "--json")
        assert finished.exit_code == 0, finished.output
        unfinished = evaluate("--data", "mini", "--weights", str(copy), "--split", "1")
        assert "random_1 interrupted" in one_error_line(unfinished)
        newest = evaluate("--data", "mini", "--json")  # the newest finished run, saying what it passed over
        assert newest.exit_code == 0, newest.output
        assert f"newer unfinished run(s) passed over: {copy} (random_1 interrupted)" in newest.stderr
        assert all(str(trained["run"]) in row["weights"] for row in json.loads(newest.stdout)["results"])
        info["splits"]["random_0"]["status"] = "pending"
        (copy / "run.json").write_text(json.dumps(info), encoding="utf-8")
        away = trained["home"] / "away"
        shutil.move(trained["run"], away)  # the finished run is gone
        try:
            line = one_error_line(evaluate("--data", "mini"))
            assert f"no finished vtiqa run on mini: the newest, {copy}, has random_0 pending, random_1" in line
        finally:
            shutil.move(away, trained["run"])
    finally:
        shutil.rmtree(copy)


def test_a_kept_model_copied_in_from_another_run_is_no_result_of_this_run(trained, tmp_path):
    """A run folder whose kept model was replaced by another run's (same dataset and split, so every other
    check passed) was scored and reported as this run's result, exit 0."""
    import shutil

    other = tmp_path / "other-run"
    trained_again = runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "mini", "--split", "0", "--out", str(other)])
    assert trained_again.exit_code == 0, trained_again.output
    copy = tmp_path / "tampered"
    shutil.copytree(trained["run"], copy)
    best = copy / "split-random_0" / "best.safetensors"
    shutil.copyfile(other / "split-random_0" / "best.safetensors", best)
    theirs, ours = (json.loads((run / "run.json").read_text(encoding="utf-8"))["run_id"] for run in (other, copy))
    line = one_error_line(evaluate("--weights", str(copy)))
    assert line.startswith(f"error: {best}: is the kept model of another run (run id {theirs}; this run's is {ours})")
    assert "pass that file as --weights" in line
    assert evaluate("--weights", str(best), "--data", "mini", "--split", "0").exit_code == 0  # as itself


def test_cross_dataset_scores_every_image(trained):
    result = evaluate("--data", "mini", "--cross", "other", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["cross"] and len(report["results"]) == 2  # once per trained split's model
    assert all(r["n"] == 20 and r["dataset"] == "other" and r["split"] == "all" for r in report["results"])
    one = evaluate("--data", "mini", "--cross", "other", "--split", "1", "--json")
    assert one.exit_code == 0, one.output
    assert [r["trained_split"] for r in json.loads(one.stdout)["results"]] == ["random_1"]
    weights = trained["run"] / "split-random_0" / "best.safetensors"
    given = evaluate("--cross", "other", "--weights", str(weights), "--split", "1", "--json")
    assert given.exit_code == 0, given.output
    # `--data other` with a model trained on mini: other's test part, titled "(test split)" as an intra result
    elsewhere = evaluate("--data", "other", "--weights", str(trained["run"]), "--split", "0")
    assert elsewhere.exit_code == 0, elsewhere.output
    assert "(test split; the model trained on mini, so a cross-dataset result)" in " ".join(elsewhere.stdout.split())
    # It was told as the model's own dataset prepared again: "trained on other with other image files than this
    # cache has now", "with labels ... now ..." and a note under the table; it never trained on other.
    said = " ".join(elsewhere.output.split())
    assert "trained on other" not in said and "than the cache has now" not in said, elsewhere.output
    assert "prepared again" not in said and "training-time tests" not in said, elsewhere.output
    as_json = evaluate("--data", "other", "--weights", str(trained["run"]), "--split", "0", "--json")
    assert [r.get("other_dataset") for r in json.loads(as_json.stdout)["results"]] == [True]
    assert "changed_since_training" not in json.loads(as_json.stdout)["results"][0]
    assert "other_dataset" not in json.loads(evaluate("--data", "mini", "--json").stdout)["results"][0]
    # One cache named twice (by name and by path) was scored twice and listed twice in --csv.
    twice = evaluate("--data", "mini", "--cross", f"other,{data_dir() / 'other.h5'}")
    assert f"--cross: '{data_dir() / 'other.h5'}' and 'other' are the same cache" in one_error_line(twice)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_an_output_that_cannot_be_written_is_refused_before_the_evaluation(trained):
    """As root, /proc passed the permission check and the evaluation ran to the end before writing failed."""
    result = evaluate("--data", "mini", "--csv", "/proc/iqa-test/metrics.csv")
    assert result.exit_code == 2 and "--csv: cannot write in /proc" in one_error_line(result)
    assert "evaluating" not in result.output


def test_bad_inputs_give_one_line(trained, tmp_path):
    missing = one_error_line(evaluate("--data", "mini", "--cross", "spaq"))
    assert "no prepared cache named 'spaq'" in missing and "`iqa prepare spaq --root DIR`" in missing
    assert "split '9' does not exist" in one_error_line(evaluate("--data", "mini", "--split", "9"))
    assert "no kept model for split '9'" in one_error_line(
        evaluate("--data", "mini", "--cross", "other", "--split", "9")
    )
    empty = data_dir() / "empty.h5"
    empty.write_bytes(b"")
    assert "empty" in one_error_line(evaluate("--data", "empty"))
    state, meta = read_state_dict(trained["run"] / "split-random_0" / "best.safetensors")
    other_method = tmp_path / "ieit.safetensors"
    save_checkpoint(state, other_method, {**meta, "method": "ieit"})
    assert "for method 'ieit'" in one_error_line(evaluate("--data", "mini", "--weights", str(other_method)))
    wrong = dict(state)
    key = next(k for k in wrong if k.endswith("head.1.weight"))
    wrong[key] = torch.zeros(3, 3)
    wrong_shape = tmp_path / "wrong.safetensors"
    save_checkpoint(wrong, wrong_shape, meta)
    line = one_error_line(evaluate("--data", "mini", "--weights", str(wrong_shape)))
    assert "does not fit" in line and "head.1.weight (3, 3)" in line
    assert "not found" in one_error_line(evaluate("--data", "mini", "--weights", str(tmp_path / "missing.pt")))


def test_imported_release_is_tested_on_the_authors_test_part(tmp_path):
    """`iqa weights import vtiqa FILE --name vtiqa_livew` records the authors' split (a seed-4 shuffle of
    their prep order), so `iqa eval` scores the images they held out, not images they trained on."""
    import h5py

    from iqa_cli.data.authors_splits import protocol_split
    from iqa_cli.models import create

    def livew_cache(resize: str | None = None) -> Path:
        cache = make_cache("mini_livew", tmp_path / "livew", data_dir() / "livew.h5", n=30, resize=resize)
        with h5py.File(cache, "r+") as handle:  # as `iqa prepare livew` names it (`custom` refuses built-in names)
            handle.attrs["dataset"] = "livew"
            handle.create_dataset("flags", data=np.array([1] * 7 + [0] * 23, dtype=np.uint8))  # its 7 training images
        return cache

    livew_cache()
    torch.manual_seed(0)
    authors = {f"module.{k}": v for k, v in create("vtiqa").state_dict().items()}  # DataParallel names
    torch.save(authors, tmp_path / "VTIQA_livew.pt")
    imported = runner.invoke(
        app, ["weights", "import", "vtiqa", str(tmp_path / "VTIQA_livew.pt"), "--name", "vtiqa_livew"]
    )
    assert imported.exit_code == 0, imported.output
    result = evaluate("--data", "livew", "--weights", "vtiqa_livew", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (row,) = report["results"]
    assert row["split"] == row["trained_split"] == "shuffle_4" and row["trained_on"] == "livew"
    assert row["n"] == protocol_split("shuffle_4", 30)["test"].size == 6
    # The authors kept the epoch that scored best on this test part: said, not "selection unknown".
    assert row["selected_on"] == "test" and "optimistic" in report["selection"]
    again = evaluate("--data", "livew", "--weights", "vtiqa_livew", "--split", "0", "--json")
    assert again.exit_code == 65 and "was trained on (split shuffle_4): that is no test result" in again.output
    assert "authors' model" not in result.output  # the cache keeps the original files, as their prep read them

    # The authors resized the original files straight to the views: a cache stored smaller gave other pixels,
    # and the figures came out as the release's own test result without a word.
    livew_cache(resize="40x40")
    smaller = evaluate("--data", "livew", "--weights", "vtiqa_livew", "--json")
    assert smaller.exit_code == 0, smaller.output
    (row,) = json.loads(smaller.stdout)["results"]
    assert (row["trained_resize"], row["resize"]) == ("none", "40x40")
    said = " ".join(smaller.stderr.split())
    assert (
        "vtiqa_livew is its authors' model, trained and tested on views they resized from the original files of "
        "livew; this cache stores them at resize 40x40" in said
    )
    assert "prepare livew with --size none for theirs" in said


def test_by_type_reports_each_distortion_type(trained, tmp_path):
    from tests.data.fixtures import make_kadid10k

    expected = make_kadid10k(tmp_path / "kadid")
    prepared = runner.invoke(app, ["prepare", "kadid10k", "--root", str(expected.root), "-j", "1"])
    assert prepared.exit_code == 0, prepared.output
    per_image = tmp_path / "p.csv"
    args = ("--data", "mini", "--cross", "kadid10k", "--split", "0", "--by-type", "--per-image", str(per_image))
    result = evaluate(*args, "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["results"]
    assert list(row["by_type"]) == ["01 Gaussian blur", "09 JPEG2000"]  # from the official I01_TT_LL names
    rows = list(csv.DictReader(per_image.open()))
    for kind, code in (("01 Gaussian blur", "_01_"), ("09 JPEG2000", "_09_")):
        mine = [r for r in rows if code in r["name"]]
        pred, label = (np.array([float(r[k]) for r in mine]) for k in ("prediction", "label"))
        assert row["by_type"][kind]["n"] == len(mine) == 6
        assert row["by_type"][kind]["srcc"] == pytest.approx(stats.spearmanr(pred, label)[0], abs=1e-6)
        assert row["by_type"][kind]["plcc"] == pytest.approx(stats.pearsonr(pred, label)[0], abs=1e-6)
    table = evaluate(*args)
    assert table.exit_code == 0 and "per distortion type" in table.stdout and "JPEG2000" in table.stdout
    # KADID-10k's own test part holds one reference: 2 images per type, too few for a correlation. The
    # table printed "nan" (a broken run, by the look of it); it prints "-" and says why, --json has null.
    model = str(trained["run"] / "split-random_0" / "best.safetensors")
    few = evaluate("--data", "kadid10k", "--weights", model, "--by-type")
    assert few.exit_code == 0, few.output
    shown = " ".join(few.stdout.split())
    assert "nan" not in shown and "-: no correlation for 2 type(s): fewer than 3 images of the type" in shown
    (few_row,) = json.loads(evaluate("--data", "kadid10k", "--weights", model, "--by-type", "--json").stdout)["results"]
    assert [values["n"] for values in few_row["by_type"].values()] == [2, 2]
    assert all(values["srcc"] is None for values in few_row["by_type"].values())
    no_types = evaluate("--data", "mini", "--by-type")
    assert "carry no distortion types" in one_error_line(no_types) and "preparing views" not in no_types.output


def _prepare(name: str, root: Path) -> None:
    result = runner.invoke(app, ["prepare", "custom", "--root", str(root), "--name", name, "-j", "1", "--splits", "2"])
    assert result.exit_code == 0, result.output


def test_cross_refuses_a_dataset_holding_byte_identical_copies_of_training_images(trained, tmp_path):
    """A dataset of other names and scores can still hold the very files a model trained on (a folder
    put together from several sources): scoring them would read as an unseen-data result."""
    import shutil

    from iqa_cli.data.cache import open_cache
    from tests.train.caches import write_folder

    again = write_folder(tmp_path / "again", n=32, seed=0)  # mini's own files, byte for byte
    with open_cache(data_dir() / "mini.h5") as mini:
        parts = [mini.split(split) for split in ("random_0", "random_1")]
        trained_by_both = sorted(set(parts[0]["train"]) & set(parts[1]["train"]))
        source = mini.names[int(trained_by_both[0])]
    folder = write_folder(tmp_path / "borrowed", n=20, seed=9)
    shutil.copy(again / source, folder / "borrowed.png")
    with open(folder / "scores.csv", "a", encoding="utf-8") as handle:
        handle.write("borrowed.png,3.0\n")
    _prepare("borrowed", folder)
    refused = evaluate("--weights", str(trained["run"]), "--cross", "borrowed")
    line = one_error_line(refused)
    assert "1 of the 21 images of borrowed are byte-identical copies of images" in line and "(borrowed.png)" in line
    assert "no unseen-data result" in line and "--drop-seen" in line
    dropped = evaluate("--weights", str(trained["run"]), "--cross", "borrowed", "--drop-seen", "--json")
    assert dropped.exit_code == 0, dropped.output
    rows = json.loads(dropped.stdout)["results"]
    assert [(row["n"], row["seen_copies_dropped"]) for row in rows] == [(20, 1), (20, 1)]
    shown = evaluate("--weights", str(trained["run"]), "--cross", "borrowed", "--drop-seen")
    assert "--drop-seen left out byte-identical copies" in " ".join(shown.stdout.split())
    (folder / "borrowed.png").unlink()
    (folder / "scores.csv").write_text(
        "".join((folder / "scores.csv").read_text(encoding="utf-8").splitlines(True)[:-1]), encoding="utf-8"
    )
    _prepare("borrowed", folder)
    clean = evaluate("--weights", str(trained["run"]), "--cross", "borrowed", "--json")
    assert clean.exit_code == 0, clean.output
    assert all("test_copies_of_training" not in row for row in json.loads(clean.stdout)["results"])


def test_copies_across_an_authors_split_are_reported_beside_its_figures(tmp_path):
    """Random splits keep copies together; an authors' split is what it is: training and `iqa eval` on it
    say how many test images are copies of training images, in the log, the table and the JSON."""
    import shutil

    from iqa_cli.data.cache import open_cache
    from tests.train.caches import write_folder

    folder = write_folder(tmp_path / "photos", n=24, seed=4)
    names = sorted(p.name for p in folder.glob("*.png"))
    for k, name in enumerate(names[:4]):
        shutil.copy(folder / name, folder / f"copy{k}.png")
    with open(folder / "scores.csv", "a", encoding="utf-8") as handle:
        handle.writelines(f"copy{k}.png,{2 + k / 4}\n" for k in range(4))
    _prepare("copies", folder)
    with open_cache(data_dir() / "copies.h5") as cache:
        index = {name: i for i, name in enumerate(cache.names)}
        pairs = [(index[names[k]], index[f"copy{k}.png"]) for k in range(4)]

        def straddling(seed: int) -> int:
            parts = cache.split(f"shuffle_{seed}")
            seen = set(parts["train"].tolist())
            test = set(parts["test"].tolist())
            return sum((a in seen and b in test) or (b in seen and a in test) for a, b in pairs)

        seed = next(s for s in range(50) if straddling(s))
        expected = straddling(seed)
    run = tmp_path / "run"
    args = ["train", "vtiqa", *without(FAST, "--val-fraction"), "--data", "copies", "--split", f"shuffle_{seed}"]
    args += ["--select-on", "test"]
    result = runner.invoke(app, [*args, "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert f"{expected} of the" in result.stderr and "test images are byte-identical copies" in result.stderr
    assert "figures include them" in result.stdout
    row = json.loads((run / "results.json").read_text(encoding="utf-8"))["splits"][0]
    assert row["test_copies_of_training"] == expected
    scored = evaluate("--weights", str(run), "--data", "copies", "--json")
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["results"][0]["test_copies_of_training"] == expected


def test_cross_onto_a_cache_without_file_digests_says_copies_cannot_be_checked(trained):
    """A cache prepared before file digests cannot show copies of training files: said, not implied checked."""
    import shutil

    import h5py

    shutil.copy(data_dir() / "other.h5", data_dir() / "other_old.h5")
    with h5py.File(data_dir() / "other_old.h5", "a") as handle:
        del handle["file_digests"]
    old = evaluate("--data", "mini", "--cross", "other_old")
    assert old.exit_code == 0, old.output
    assert "copies of the files the model trained on cannot be found in it" in " ".join(old.stderr.split())
    checked = evaluate("--data", "mini", "--cross", "other")
    assert checked.exit_code == 0 and "cannot be found" not in checked.stderr


def test_a_lost_signal_stops_the_evaluation_at_the_next_batch(trained, monkeypatch):
    """A SIGTERM whose exception a library discarded let `iqa eval` score everything and print its
    report before the command's end noticed the signal (exit 143 with a whole --json document on stdout)."""
    from iqa_cli.train.recipes.vtiqa import VTIQARecipe
    from tests.signals import lose_a_signal

    original = VTIQARecipe.predict_batch
    calls = []

    def losing_a_signal(self, *args, **kwargs):
        calls.append(1)
        lose_a_signal("SIGTERM")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(VTIQARecipe, "predict_batch", losing_a_signal)
    result = evaluate("--data", "mini", "--json", "--batch-size", "2")
    assert result.exit_code == 143 and result.stdout == "", result.output
    assert "terminated (SIGTERM)" in one_error_line(result) and len(calls) == 1


def test_predict_with_a_run_of_several_splits_says_which_split_s_model_scores(trained, tmp_path):
    """`iqa predict vtiqa --weights RUN` of a 2-split run scored with one split's model without a word, so
    its numbers could be taken for the run's."""
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(photo)
    chosen = runner.invoke(app, ["predict", "vtiqa", str(photo), "--weights", "mini-run", "--device", "cpu"])
    assert chosen.exit_code == 0, chosen.output
    line = " ".join(chosen.stderr.split())
    assert "note: run mini-run kept 2 models, one per split; scoring with split random_0's (--split chooses" in line
    named = runner.invoke(app, ["predict", "vtiqa", str(photo), "--weights", "mini-run", "--split", "1"])
    assert named.exit_code == 0 and "kept 2 models" not in named.stderr, named.output


def test_a_lost_signal_stops_the_views_of_an_evaluation_at_the_next_chunk(trained, monkeypatch):
    """A SIGTERM whose exception a library discarded while an evaluation prepared its views let it make the
    views of every image (a minute on a large test set) before the first batch noticed."""
    from iqa_cli.train import views as views_module
    from tests.signals import lose_a_signal

    original = views_module.ViewStore.make_views
    calls = []

    def losing_a_signal(self, *args, **kwargs):
        calls.append(1)
        lose_a_signal("SIGTERM")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(views_module, "PRELOAD_CHUNK", 2)  # 8 test images: 4 chunks
    monkeypatch.setattr(views_module.ViewStore, "make_views", losing_a_signal)
    result = evaluate("--data", "mini", "--split", "0", "--json")
    assert result.exit_code == 143 and result.stdout == "", result.output
    assert "terminated (SIGTERM)" in one_error_line(result) and len(calls) == 1


def test_the_original_variant_without_its_release_says_which_files_to_import():
    """`iqa eval vtiqa --variant original` scores the released three-file model by default; without it
    the error named 'vtiqa_org_koniq10k', a name the user never typed and no file has."""
    result = evaluate("--data", "mini", "--variant", "original")
    assert result.exit_code == 65, result.output
    line = one_error_line(result)
    assert "--variant original scores vtiqa_org_koniq10k, released as three files" in line
    for part in ("backbone", "fusion", "selection"):
        assert f"iqa weights import vtiqa-org-{part} FILE --name vtiqa_org_koniq10k_{part}" in line


def test_several_cross_datasets_are_all_checked_before_any_is_scored(trained, tmp_path):
    """`--cross other,borrowed2` scored `other` in full and only then refused `borrowed2` (it holds a copy of a
    training image): a long evaluation thrown away for a refusal that needed no model."""
    import shutil

    from iqa_cli.data.cache import open_cache
    from tests.train.caches import write_folder

    again = write_folder(tmp_path / "again", n=32, seed=0)  # mini's own files, byte for byte
    with open_cache(data_dir() / "mini.h5") as mini:
        source = mini.names[int(mini.split("random_0")["train"][0])]
    folder = write_folder(tmp_path / "borrowed", n=20, seed=9)
    shutil.copy(again / source, folder / "borrowed.png")
    with open(folder / "scores.csv", "a", encoding="utf-8") as handle:
        handle.write("borrowed.png,3.0\n")
    _prepare("borrowed2", folder)
    result = evaluate("--weights", str(trained["run"]), "--cross", "other,borrowed2", "--json")
    assert result.exit_code == 65 and "byte-identical copies" in one_error_line(result)
    assert "evaluating other" not in result.output and "preparing views" not in result.output


def test_a_run_with_a_damaged_record_is_named_as_such(trained, tmp_path):
    """`--weights RUN` whose run.json was damaged read as "neither a file nor a name in the weights store"."""
    import shutil

    damaged = trained["home"] / "runs" / "damaged-run"
    shutil.copytree(trained["run"], damaged)
    try:
        (damaged / "run.json").write_text('{"method": ', encoding="utf-8")
        line = one_error_line(evaluate("--data", "mini", "--weights", "damaged-run"))
        assert "damaged run.json" in line and str(damaged / "run.json") in line
        (damaged / "run.json").write_text("[1, 2]", encoding="utf-8")
        assert "a JSON list, not a run's record" in one_error_line(
            evaluate("--data", "mini", "--weights", str(damaged))
        )
    finally:
        shutil.rmtree(damaged)


def test_a_model_scoring_lower_is_better_is_not_scored_against_higher_is_better_labels(trained, tmp_path, monkeypatch):
    """A model trained on a DMOS cache's native scores predicts DMOS: scored against a MOS cache's labels, every
    correlation had the opposite sign (as if the model ranked worse than chance), with exit 0."""
    monkeypatch.setenv("IQA_HOME", str(tmp_path / "home"))
    make_cache("dm", tmp_path / "dm", data_dir() / "dm.h5", n=24, splits=1, lower_better=True)
    make_cache("mo", tmp_path / "mo", data_dir() / "mo.h5", n=24, seed=5, splits=1)
    native, paper = tmp_path / "native", tmp_path / "paper"
    for run, scale in ((native, "native"), (paper, "paper")):
        result = runner.invoke(
            app, ["train", "vtiqa", *FAST, "--data", "dm", "--label-scale", scale, "--out", str(run)]
        )
        assert result.exit_code == 0, result.output
    line = one_error_line(evaluate("--weights", str(native), "--cross", "mo"))
    assert "predicts scores where lower is better (its labels: native scores)" in line, line
    assert "mo's labels for it are scores where higher is better" in line and "--label-scale paper or range" in line
    assert evaluate("--weights", str(paper), "--cross", "mo").exit_code == 0
    # With several datasets, every one is checked before any is scored.
    both = evaluate("--weights", str(native), "--cross", "dm,mo")
    assert "mo's labels for it are scores where higher is better" in one_error_line(both)
    assert "evaluating dm" not in both.output  # nothing scored
    # During training, a watched dataset whose labels run the other way is refused before the first epoch.
    watched = runner.invoke(
        app,
        [
            "train",
            "vtiqa",
            *FAST,
            "--data",
            "dm",
            "--label-scale",
            "native",
            "--watch",
            "mo",
            "--out",
            str(tmp_path / "w"),
        ],
    )
    line = one_error_line(watched)
    assert line.startswith("error: --watch mo: the model being trained predicts scores where lower is better"), line
    assert not (tmp_path / "w" / "split-random_0" / "best.safetensors").exists()
    # predict says which way the scores run
    image = next((tmp_path / "mo").glob("*.png"))
    shown = runner.invoke(app, ["predict", "vtiqa", "--weights", str(native), str(image), "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["scale"] == "training labels (native scores), lower is better"


def test_a_name_that_is_both_a_run_and_a_stored_checkpoint_is_refused(trained, tmp_path):
    """`--weights NAME` where NAME is a run and a weights-store entry: the run was taken without a word, though
    the stored file may be another model (here the run's other split)."""
    import iqa_cli
    from iqa_cli.errors import CheckpointError

    other = trained["run"] / "split-random_0" / "best.safetensors"
    assert runner.invoke(app, ["weights", "add", "mini-run", str(other)]).exit_code == 0
    try:
        for command in (
            ["eval", "vtiqa", "--device", "cpu", "--data", "mini", "--weights", "mini-run"],
            ["predict", "vtiqa", str(trained["home"] / "one.png"), "--weights", "mini-run", "--device", "cpu"],
        ):
            line = one_error_line(runner.invoke(app, command))
            assert "'mini-run' names both a run" in line and "and a stored checkpoint" in line
        with pytest.raises(CheckpointError, match="names both a run"):
            iqa_cli.load("mini-run", device="cpu")
        by_folder = evaluate("--data", "mini", "--weights", str(trained["run"]), "--json")  # the way out
        assert by_folder.exit_code == 0, by_folder.output
    finally:
        assert runner.invoke(app, ["weights", "rm", "mini-run"]).exit_code == 0
