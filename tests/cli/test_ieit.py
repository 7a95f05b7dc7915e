"""IEIT through the CLI on small real caches: prepare -> enhance -> train stage 1 -> stage 2 -> eval
(intra- and cross-dataset, with the low-quality subset) -> predict on image files; stage 2 under DDP;
bad inputs giving one line."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.home import data_dir
from iqa_cli.train.labels import LOW_QUALITY_THRESHOLDS
from tests.enhance.helpers import enhanced_cache, tiny_classifier
from tests.train.caches import write_folder
from tests.train.threads import one_thread

runner = CliRunner()
FAST = ["--tiny", "--batch-size", "8", "--dropout", "0", "--device", "cpu", "--log-every", "1000"]
FAST += ["--val-fraction", "0.2"]  # a validation part of at least 3 images (a correlation needs 3)
STAGE1 = ["--optimizer", "adamw", "--lr", "0.0005", "--freeze-epochs", "0"]


def iqa(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def error_line(result) -> str:
    """The single `error:` line of a failed command (plain progress lines may come before it)."""
    assert result.exit_code != 0, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_prepare_train_both_stages_evaluate_and_predict(tmp_path, _isolated_home, monkeypatch):
    with one_thread():
        _prepare_train_both_stages_evaluate_and_predict(tmp_path, _isolated_home, monkeypatch)


def _prepare_train_both_stages_evaluate_and_predict(tmp_path, _isolated_home, monkeypatch):
    classifier = tiny_classifier(tmp_path / "classifier.safetensors")
    folder = write_folder(tmp_path / "mini", n=32)
    prepared = iqa("prepare", "custom", "--root", folder, "--name", "mini", "--range", "1,5", "--splits", "2",
                   "--test-fraction", "0.25", "-j", "1", "--enhance", "--classifier", classifier, "--json")  # fmt: skip
    assert prepared.exit_code == 0, prepared.output
    assert json.loads(prepared.stdout)["enhanced"]["count"] == 32
    one = iqa("train", "ieit", *FAST, *STAGE1, "--data", "mini", "--epochs", "2", "--classifier", classifier,
              "--name", "one", "--json")  # fmt: skip
    assert one.exit_code == 0, one.output
    two = iqa("train", "ieit", *FAST, "--data", "mini", "--stage", "2", "--epochs", "1", "--name", "two",
              "--json")  # fmt: skip
    assert two.exit_code == 0, two.output
    runs = _isolated_home / "runs"
    assert f"stage 2 starts from {runs / 'one' / 'split-random_0' / 'best.safetensors'}" in " ".join(two.output.split())
    report = json.loads(two.stdout)
    row = report["splits"][0]
    assert row["lq_n"] > 0 and "lq_plcc" in report["median"] and report["columns"][2:4] == ["lq_srcc", "lq_plcc"]
    again = iqa("train", "ieit", *FAST, "--data", "mini", "--stage", "2", "--epochs", "1", "--from", "one",
                "--name", "three")  # fmt: skip
    assert again.exit_code == 0, again.output

    per_image = tmp_path / "per_image.csv"
    evaluated = iqa("eval", "ieit", "--data", "mini", "--json", "--per-image", per_image, "--device", "cpu")
    assert evaluated.exit_code == 0, evaluated.output
    # Every IEIT model evaluated on its own dataset warned "trained ... with loss None on this dataset, now
    # 'l1'; ...: these figures are not those of its training-time tests" (the stage's values, recorded
    # unfilled beside filled ones), although the figures were exactly its training-time ones.
    assert "not those of its training-time tests" not in evaluated.output
    result = json.loads(evaluated.stdout)["results"][0]
    assert result["weights"].startswith(str(runs / "three")) and result["n"] == 8
    assert {"lq_n", "lq_srcc", "lq_plcc", "plcc+lq_plcc"} <= set(result)
    plain = iqa("eval", "ieit", "--data", "mini", "--no-select-enhanced", "--lq-threshold", "4", "--device", "cpu",
                "--json")  # fmt: skip
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["results"][0]["lq_n"] > result["lq_n"]

    other = enhanced_cache(tmp_path / "other", data_dir() / "other.h5", n=12, seed=4)
    cross = iqa("eval", "ieit", "--data", "mini", "--cross", other, "--json", "--device", "cpu")
    assert cross.exit_code == 0, cross.output
    assert json.loads(cross.stdout)["results"][0]["n"] == 12

    # The low-quality bar is the tested dataset's (CID2013: 2.4, as the authors' CID test script sets it);
    # the checkpoint kept its training dataset's resolved bar (2.0), and cross-dataset tests used that.
    monkeypatch.setitem(LOW_QUALITY_THRESHOLDS, "other", 3.5)  # a dataset with its own bar, as CID2013

    def lq_n(*bar: str) -> int:
        scored = iqa("eval", "ieit", "--data", "mini", "--cross", other, *bar, "--json", "--device", "cpu")
        assert scored.exit_code == 0, scored.output
        return json.loads(scored.stdout)["results"][0]["lq_n"]

    assert lq_n() == lq_n("--lq-threshold", "3.5") > lq_n("--lq-threshold", "2")

    # Image files: E and the selection rule computed on the fly give the scores of the stored ones.
    weights = runs / "one" / "split-random_0" / "best.safetensors"
    stage1_rows = iqa("eval", "ieit", "--weights", weights, "--data", "mini", "--split", "random_0", "--per-image",
                      tmp_path / "one.csv", "--device", "cpu")  # fmt: skip
    assert stage1_rows.exit_code == 0, stage1_rows.output
    assert "not those of its training-time tests" not in stage1_rows.output
    rows = list(csv.DictReader((tmp_path / "one.csv").open()))[:3]
    predicted = iqa("predict", "ieit", *[folder / r["name"] for r in rows], "--weights", weights, "--json",
                    "--device", "cpu")  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    scores = [p["score"] for p in json.loads(predicted.stdout)["predictions"]]
    assert scores == pytest.approx([float(r["prediction"]) for r in rows], abs=1e-4)
    # the test-time options of `iqa eval` that apply to files are flags of `iqa predict` too
    unselected = iqa("eval", "ieit", "--weights", weights, "--data", "mini", "--split", "random_0", "--per-image",
                     tmp_path / "all.csv", "--device", "cpu", "--no-select-enhanced")  # fmt: skip
    assert unselected.exit_code == 0, unselected.output
    rows = list(csv.DictReader((tmp_path / "all.csv").open()))[:3]
    predicted = iqa("predict", "ieit", *[folder / r["name"] for r in rows], "--weights", weights, "--json",
                    "--device", "cpu", "--no-select-enhanced")  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    scores = [p["score"] for p in json.loads(predicted.stdout)["predictions"]]
    assert scores == pytest.approx([float(r["prediction"]) for r in rows], abs=1e-4)
    reads_labels = iqa("predict", "ieit", folder / rows[0]["name"], "--weights", weights, "--lq-threshold", "2")
    assert reads_labels.exit_code == 2 and "--lq-threshold: no such option" in reads_labels.output

    # E made again from another source (here: another tool's images under the same names) changed the model's
    # figures with no word; made again the same way, nothing is said.
    same = iqa("prepare", "enhance", "mini", "--classifier", classifier)
    assert same.exit_code == 0, same.output
    again = iqa("eval", "ieit", "--data", "mini", "--device", "cpu")
    assert again.exit_code == 0 and "enhanced images" not in again.output, again.output
    # (The originals themselves are refused as E: `test_the_datasets_own_folder_given_as_enhanced_images_is_refused`.)
    other_tool = write_folder(tmp_path / "other_tool", n=32, seed=7)
    other_source = iqa("prepare", "enhance", "mini", "--enhanced-root", other_tool, "--classifier", classifier)
    assert other_source.exit_code == 0, other_source.output
    changed = iqa("eval", "ieit", "--data", "mini", "--device", "cpu", "--json")
    assert changed.exit_code == 0, changed.output
    assert "trained on mini with other enhanced images than this cache has now" in " ".join(changed.stderr.split())
    assert json.loads(changed.stdout)["results"][0]["changed_since_training"] == "enhanced_images"
    # ... and a run going on, or joined with one trained on the new E, would mix the two.
    resumed = iqa("train", "ieit", "--resume", "--out", runs / "three")
    assert resumed.exit_code == 2 and "it trained with other enhanced images than the cache has" in resumed.output
    later = iqa("train", "ieit", *FAST, *STAGE1, "--data", "mini", "--epochs", "2", "--split", "random_1",
                "--classifier", classifier, "--name", "later")  # fmt: skip
    assert later.exit_code == 0, later.output
    joined = iqa("runs", "combine", "one", "later")
    assert joined.exit_code != 0 and "trained with other enhanced images" in joined.output
    from_old = iqa("train", "ieit", *FAST, "--data", "mini", "--stage", "2", "--epochs", "1", "--from", "one",
                   "--name", "four")  # fmt: skip
    assert from_old.exit_code == 2 and "stage 2 would start from" in " ".join(from_old.output.split())


def test_bad_inputs_give_one_line(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "plain", n=20)
    made = iqa("prepare", "custom", "--root", folder, "--name", "plain", "--range", "1,5", "-j", "1")
    assert made.exit_code == 0, made.output
    assert "iqa prepare enhance" in error_line(iqa("train", "ieit", *FAST, "--data", "plain", "--epochs", "1"))
    assert "needs --stage 2" in error_line(iqa("train", "ieit", *FAST, "--data", "plain", "--from", "x"))
    assert "stage must be 1 or 2" in error_line(iqa("train", "ieit", *FAST, "--data", "plain", "--stage", "3"))
    # The low-quality bar reads labels on 1-5: a dataset's own scale put other images under it (a DMOS set's best).
    native = error_line(iqa("train", "ieit", *FAST, "--data", "plain", "--label-scale", "native"))
    assert native.startswith("error: --label-scale native: IEIT's low-quality images") and "paper or range" in native
    enhanced = iqa("prepare", "enhance", "plain", "--no-selection", "--device", "cpu")
    assert enhanced.exit_code == 0, enhanced.output
    no_rule = error_line(iqa("train", "ieit", *FAST, "--data", "plain", "--epochs", "1"))
    assert "--no-select-enhanced" in no_rule and "iqa prepare enhance" in no_rule
    no_stage1 = error_line(iqa("train", "ieit", *FAST, "--data", "plain", "--stage", "2", "--no-select-enhanced"))
    assert "no finished ieit stage-1 --tiny run on 'plain'" in no_stage1 and "--from RUN" in no_stage1
    monkeypatch.setenv("IQA_OFFLINE", "1")
    missing = error_line(iqa("prepare", "enhance", "plain", "--device", "cpu"))
    assert "iqa weights fetch deit_small_patch16_224" in missing and "--no-selection" in missing


def test_stage_two_starts_from_stage_one_of_the_same_images_prepared_under_another_name(tmp_path, _isolated_home):
    """Stage 2 looked stage 1 up by the dataset's name: on the same images and splits prepared under another
    `--name` (a node's own preparation), `--from one` was refused ("run trained on 'mini', not 'copy'") and
    the search found nothing. A run of the same images is now taken; one of other images is not."""
    with one_thread():
        classifier = tiny_classifier(tmp_path / "classifier.safetensors")
        folder = write_folder(tmp_path / "mini", n=32)
        other = write_folder(tmp_path / "other", n=32, seed=5)

        def prepare(root: Path, name: str) -> None:
            made = iqa("prepare", "custom", "--root", root, "--name", name, "--range", "1,5", "--splits", "2",
                       "--test-fraction", "0.25", "-j", "1", "--enhance", "--classifier", classifier)  # fmt: skip
            assert made.exit_code == 0, made.output

        prepare(folder, "mini")
        prepare(folder, "copy")
        prepare(other, "other")
        stage1 = ["train", "ieit", *FAST, *STAGE1, "--epochs", "1", "--classifier", classifier, "--split", "0"]
        assert iqa(*stage1, "--data", "mini", "--name", "one").exit_code == 0
        stage2 = ["train", "ieit", *FAST, "--stage", "2", "--epochs", "1", "--split", "0"]
        named = iqa(*stage2, "--data", "copy", "--from", "one", "--name", "named")
        assert named.exit_code == 0, named.output
        found = iqa(*stage2, "--data", "copy", "--name", "found")
        assert found.exit_code == 0, found.output
        start = _isolated_home / "runs" / "one" / "split-random_0" / "best.safetensors"
        assert f"stage 2 starts from {start}" in " ".join(found.output.split())
        line = error_line(iqa(*stage2, "--data", "other", "--from", "one"))
        assert "run trained on 'mini', other images than 'other' holds" in line
        assert "no finished ieit stage-1" in error_line(iqa(*stage2, "--data", "other"))


def test_stage_two_never_starts_from_a_model_that_trained_on_its_test_images(tmp_path, _isolated_home):
    """Stage 2 found the newest stage-1 run of the dataset by name and split name: after the cache was
    prepared again with other splits (or with `--from` another split's model) it went on from a model
    trained on images of its test part, and its test figures included them, exit 0."""
    with one_thread():
        classifier = tiny_classifier(tmp_path / "classifier.safetensors")
        folder = write_folder(tmp_path / "mini", n=32)
        prepare = ["prepare", "custom", "--root", folder, "--name", "mini", "--range", "1,5", "--splits", "2",
                   "--test-fraction", "0.25", "-j", "1", "--enhance", "--classifier", classifier]  # fmt: skip
        assert iqa(*prepare).exit_code == 0
        stage1 = ["train", "ieit", *FAST, *STAGE1, "--data", "mini", "--epochs", "1", "--classifier", classifier]
        assert iqa(*stage1, "--name", "one", "--split", "1").exit_code == 0
        other_split = _isolated_home / "runs" / "one" / "split-random_1" / "best.safetensors"
        stage2 = ["train", "ieit", *FAST, "--data", "mini", "--stage", "2", "--epochs", "1"]
        line = error_line(iqa(*stage2, "--split", "0", "--from", other_split))
        assert "a stage-1 model of split random_1" in line and "start from stage 1 of split random_0" in line
        assert iqa(*stage1, "--name", "zero", "--split", "0").exit_code == 0
        assert iqa(*prepare, "--split-seed", "7").exit_code == 0  # the same name, other splits
        line = error_line(iqa(*stage2, "--split", "0"))
        assert "no finished ieit stage-1 --tiny run" in line and "zero trained split random_0 as it was" in line
        line = error_line(iqa(*stage2, "--split", "0", "--from", "zero"))
        assert "another preparation of the cache" in line and "train stage 1 again" in line
        assert iqa(*stage1, "--name", "again", "--split", "0").exit_code == 0
        # Every split's start is found before any trains: split 1 has no stage-1 model on this cache, so
        # `--split all` stops before split 0 trains (it trained split 0, then failed).
        line = error_line(iqa(*stage2, "--split", "all", "--name", "both"))
        assert "no finished ieit stage-1 --tiny run on 'mini' with a kept model for split random_1" in line
        assert not (_isolated_home / "runs" / "both" / "split-random_0" / "best.safetensors").exists()
        result = iqa(*stage2, "--split", "0", "--name", "two")
        assert result.exit_code == 0, result.output
        assert "again/split-random_0" in " ".join(result.output.split())


def test_enhanced_images_made_otherwise_than_the_model_saw_are_said(tmp_path, _isolated_home):
    """A model trained on E from an external tool (`--enhanced-root`) scored image files with the built-in
    enhancement, and a cache whose E was made otherwise, without a word: inputs it never trained on."""
    import numpy as np
    from PIL import Image

    with one_thread():
        classifier = tiny_classifier(tmp_path / "classifier.safetensors")
        folder = write_folder(tmp_path / "mini", n=32)
        external = tmp_path / "external"
        external.mkdir()
        for image in sorted(folder.glob("*.png")):  # an "external tool": every E is the image, a bit brighter
            pixels = np.asarray(Image.open(image).convert("RGB"), dtype=np.int16)
            Image.fromarray(np.clip(pixels + 20, 0, 255).astype(np.uint8)).save(external / image.name)
        base = ["prepare", "custom", "--root", folder, "--range", "1,5", "--splits", "1", "-j", "1"]
        assert iqa(*base, "--name", "builtin", "--enhance", "--classifier", classifier).exit_code == 0
        assert iqa(*base, "--name", "outside").exit_code == 0
        made = iqa("prepare", "enhance", "outside", "--enhanced-root", external, "--classifier", classifier,
                   "--device", "cpu")  # fmt: skip
        assert made.exit_code == 0, made.output
        stage1 = ["train", "ieit", *FAST, *STAGE1, "--epochs", "1", "--classifier", classifier]
        assert iqa(*stage1, "--data", "outside", "--name", "ext").exit_code == 0
        assert iqa(*stage1, "--data", "builtin", "--name", "own").exit_code == 0
        photo = sorted(folder.glob("*.png"))[0]
        predicted = iqa("predict", "ieit", photo, "--weights", "ext", "--device", "cpu")
        assert predicted.exit_code == 0, predicted.output
        said = " ".join(predicted.stderr.split())
        assert "trained with enhanced images made otherwise (external:" in said and "built-in enhancement" in said
        quiet = iqa("predict", "ieit", photo, "--weights", "own", "--device", "cpu")
        assert quiet.exit_code == 0 and "made otherwise" not in quiet.stderr, quiet.output
        crossed = iqa("eval", "ieit", "--weights", "own", "--data", "builtin", "--cross", "outside", "--device",
                      "cpu", "--drop-seen")  # fmt: skip
        said = " ".join(crossed.stderr.split())
        assert "trained with enhanced images made otherwise (builtin:" in said
        assert "than this cache's (external:" in said


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun not installed",
)
def test_stage_two_under_ddp_trains_every_branch_in_sync(tmp_path, _isolated_home):
    """Two gloo ranks: stage 2's one forward must reach encoder 2 and both regressors, or DDP fails."""
    enhanced_cache(tmp_path / "mini", _isolated_home / "data" / "mini.h5", n=24)
    one = iqa("train", "ieit", *FAST, *STAGE1, "--data", "mini", "--epochs", "1", "--name", "one")
    assert one.exit_code == 0, one.output
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "iqa_cli", "train", "ieit", *FAST]
    command += ["--data", "mini", "--stage", "2", "--epochs", "1", "--out", str(tmp_path / "ddp"), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    causes = [line for line in done.stderr.splitlines() if "error" in line.lower() and "errors.html" not in line]
    assert done.returncode == 0, "\n".join(causes[-20:]) or done.stderr[-2000:]
    ranks = json.loads(done.stdout)["splits"][0]["ranks"]
    assert ranks["world_size"] == 2 and len(set(ranks["weights_digest"])) == 1
