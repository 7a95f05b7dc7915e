"""VIPNet end to end through the CLI on tiny configs: `iqa prepare distorted` -> `iqa train vipnet-dpm` ->
`iqa train vipnet --dpm best.safetensors` -> `iqa eval vipnet` (intra- and cross-dataset) and
`iqa eval vipnet-dpm`; bad inputs give one error line; DDP with two gloo ranks."""

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

import iqa_cli
from iqa_cli.cli.main import app
from iqa_cli.distort.generate import DistortOptions, generate_distorted
from iqa_cli.distort.refs import list_references
from iqa_cli.distort.registry import TYPES
from iqa_cli.home import data_dir
from iqa_cli.models.checkpoint import read_state_dict
from tests.cli.test_train import one_error_line
from tests.distort.images import write_reference_folder
from tests.train.caches import make_cache
from tests.train.threads import one_thread

runner = CliRunner()
CPU = ["--tiny", "--device", "cpu", "--log-every", "1000"]
CPU += ["--val-fraction", "0.2"]  # a validation part of at least 3 images (a correlation needs 3)


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_prepare_distorted_then_dpm_then_vipnet_then_eval(tmp_path):
    with one_thread():
        _end_to_end(tmp_path)


def _end_to_end(tmp_path: Path) -> None:
    refs = write_reference_folder(tmp_path / "refs", count=8, size=(128, 96))
    kadis = tmp_path / "kadis.h5"
    made = invoke(
        "prepare", "distorted", "--refs", str(refs), "--out", str(kadis), "--types", "1,11", "--levels", "4-5",
        "--size", "128x96", "--workers", "1", "--test-fraction", "0.25", "--json",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert json.loads(made.stdout)["count"] == 8 * 2 * 2

    dpm_run = tmp_path / "dpm"
    dpm = invoke("train", "vipnet-dpm", *CPU, "--data", str(kadis), "--epochs", "1", "--out", str(dpm_run), "--json")
    assert dpm.exit_code == 0, dpm.output
    row = json.loads(dpm.stdout)["splits"][0]
    assert row["n"] == 8 and {"accuracy", "type_accuracy", "level_accuracy"} <= set(row)
    dpm_weights = dpm_run / "split-random_0" / "best.safetensors"
    # `iqa runs list` and `runs show` printed "-" for a finished DPM run (it has accuracies, no SRCC).
    from iqa_cli.train.runs import read_run, run_summary

    assert run_summary(dpm_run, read_run(dpm_run))["accuracy"] == row["accuracy"]
    shown = invoke("runs", "show", str(dpm_run))
    assert f"accuracy {row['accuracy']:.4f} type_accuracy {row['type_accuracy']:.4f}" in shown.stdout
    assert read_state_dict(dpm_weights)[1]["model"] == "vipnet-dpm"
    log = [
        json.loads(line) for line in (dpm_run / "split-random_0" / "log.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert {"by_type", "by_level"} <= set(log[-1]) and set(log[-1]["by_type"]) == {"1", "11"}

    dpm_eval = invoke("eval", "vipnet-dpm", "--cross", str(kadis), "--weights", str(dpm_weights), "--device", "cpu")
    assert dpm_eval.exit_code == 0, dpm_eval.output
    assert "type_accuracy" in dpm_eval.stdout

    # `iqa predict vipnet-dpm` printed a class number as a "score on the training label scale (1-5 ...)";
    # it now says which distortion type and level each image is classified as.
    table = tmp_path / "classes.csv"
    predicted = invoke("predict", "vipnet-dpm", str(refs), "--weights", str(dpm_weights), "--device", "cpu",
                       "--json", "--csv", str(table))  # fmt: skip
    assert predicted.exit_code == 0, predicted.output
    report = json.loads(predicted.stdout)
    assert "not a quality score" in report["scale"] and report["native_scale"] is None
    for row in report["predictions"]:
        assert row["score"] == (row["distortion_type"] - 1) * 5 + row["level"] - 1 and row["score_native"] is None
        assert row["distortion"] == TYPES[row["distortion_type"]].name
    rows = list(csv.DictReader(table.open()))
    assert [(r["distortion_type"], r["level"]) for r in rows] == [
        (str(p["distortion_type"]), str(p["level"])) for p in report["predictions"]
    ]
    shown = invoke("predict", "vipnet-dpm", str(refs), "--weights", str(dpm_weights), "--device", "cpu")
    assert shown.exit_code == 0 and "distortion type" in shown.stdout and "level" in shown.stdout
    scorer = iqa_cli.load(str(dpm_weights), device="cpu")
    classes = scorer(str(refs))
    assert list(classes) == [p["score"] for p in report["predictions"]]
    assert scorer.details(classes) == [
        {key: p[key] for key in ("distortion_type", "distortion", "level")} for p in report["predictions"]
    ]

    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5", splits=1)
    make_cache("other", tmp_path / "other", data_dir() / "other.h5", n=12, seed=5, splits=1)
    vip = invoke("train", "vipnet", *CPU, "--data", "mini", "--dpm", str(dpm_weights), "--epochs", "2", "--json")
    assert vip.exit_code == 0, vip.output
    trained = json.loads(vip.stdout)["splits"][0]
    weights = Path(trained["weights"])
    state, meta = read_state_dict(weights)
    assert meta["model"] == "vipnet" and json.loads(meta["params"])["dpm"] == str(dpm_weights)

    # The newest local run on 'mini' is found; the test crops are seeded, so the numbers repeat exactly.
    intra = invoke("eval", "vipnet", "--data", "mini", "--device", "cpu", "--json")
    assert intra.exit_code == 0, intra.output
    result = json.loads(intra.stdout)["results"][0]
    assert result["n"] == trained["n"] and result["srcc"] == trained["srcc"] and result["plcc"] == trained["plcc"]

    cross = invoke("eval", "vipnet", "--data", "mini", "--cross", "other", "--test-patch-num", "3", "--json")
    assert cross.exit_code == 0, cross.output
    report = json.loads(cross.stdout)
    assert report["cross"] and report["results"][0]["n"] == 12 and report["trained_on"] == "mini"


def test_bad_inputs_give_one_line(tmp_path):
    make_cache("plain", tmp_path / "plain", data_dir() / "plain.h5", n=20, splits=1)  # 5 test, 3 validation
    line = one_error_line(invoke("train", "vipnet-dpm", *CPU, "--data", "plain"))
    assert "not a distorted-image cache" in line and "plain.h5" in line
    line = one_error_line(invoke("train", "vipnet", *CPU, "--data", "plain", "--dpm", str(tmp_path / "no.safetensors")))
    assert "checkpoint file not found" in line
    assert "--dpm-view must be one of" in one_error_line(
        invoke("train", "vipnet", *CPU, "--data", "plain", "--dpm-view", "x")
    )
    line = one_error_line(invoke("train", "vipnet", *CPU, "--data", "plain", "--canvas", "32,32"))
    assert "canvas" in line and "crop size" in line
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    line = one_error_line(invoke("train", "vipnet", *CPU, "--data", "plain", "--dpm", str(bad)), after_progress=True)
    assert "not a checkpoint" in line and "bad.pt" in line
    # Without --tiny the defaults name the authors' DPM in the weights store, which is never downloaded.
    line = one_error_line(invoke("train", "vipnet", "--device", "cpu", "--data", "plain"))
    assert "vipnet_dpm" in line


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun not installed",
)
def test_dpm_under_two_gloo_ranks_keeps_one_model(tmp_path):
    """BatchNorm statistics are per rank after an epoch's last step; every rank must evaluate rank 0's."""
    refs = write_reference_folder(tmp_path / "refs", count=4, size=(128, 96))
    kadis = tmp_path / "kadis.h5"
    generate_distorted(
        list_references(refs), kadis, DistortOptions(types=[11], levels=[4, 5], size=(128, 96), workers=1)
    )
    torchrun = Path(sys.executable).with_name("torchrun")
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "iqa_cli", "train", "vipnet-dpm", *CPU]
    command += ["--data", str(kadis), "--epochs", "1", "--batch-size", "4", "--out", str(tmp_path / "ddp"), "--json"]
    done = subprocess.run(
        command,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = json.loads(done.stdout)["splits"][0]["ranks"]
    assert ranks["world_size"] == 2 and ranks["first_epoch"]["shared"] == 0
    assert len(set(ranks["weights_digest"])) == 1


def test_content_backbone_and_single_scale_flags_train_and_evaluate(tmp_path):
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5", splits=1)
    with one_thread():
        flags = ["--cpm", "resnet18", "--no-multi-scale", "--epochs", "1", "--json"]
        vip = invoke("train", "vipnet", *CPU, "--data", "mini", *flags)
        assert vip.exit_code == 0, vip.output
        weights = json.loads(vip.stdout)["splits"][0]["weights"]
        params = json.loads(read_state_dict(weights)[1]["params"])
        assert (params["cpm"], params["multi_scale"]) == ("resnet18", False)
        scored = invoke("eval", "vipnet", "--data", "mini", "--device", "cpu", "--json")  # rebuilt from the params
        assert scored.exit_code == 0, scored.output
    line = one_error_line(invoke("train", "vipnet", *CPU, "--data", "mini", "--cpm", "vgg16"))
    assert "cpm must be one of resnet18, resnet34, resnet50" in line


def test_whole_dataset_rounds_with_watched_datasets_are_the_authors_cross_protocol(tmp_path):
    """train_cross_datast.py: every image of A trains; B is scored after every epoch; per round the max
    |SRCC| and |PLCC| over epochs (labelled optimistic) beside the last epoch's, medians over rounds."""
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5", splits=1)
    make_cache("other", tmp_path / "other", data_dir() / "other.h5", n=12, seed=5, splits=1)
    with one_thread():
        args = ["--data", "mini", "--split", "whole_1", "--watch", "other", "--epochs", "2", "--json"]
        run = invoke("train", "vipnet", *CPU, *args)
        assert run.exit_code == 0, run.output
    report = json.loads(run.stdout)
    row = report["splits"][0]
    assert row["split"] == "whole_1" and row["n"] == 0 and row["selected_on"] == "none" and row["best_epoch"] == 1
    # the run's record said "validation part of the training split" (the --select-on default), though no
    # image is held out and the last epoch's model is kept
    recorded = json.loads((Path(report["run"]) / "run.json").read_text(encoding="utf-8"))
    assert report["selected_on"] == recorded["selected_on"] == "none"
    assert recorded["selection"] == "nothing: every image trains, the last epoch is kept"
    split_folder = Path(report["run"]) / "split-whole_1"
    log = [json.loads(line) for line in (split_folder / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    watched = [r for r in log if r["part"] == "watch:other"]
    assert [r["epoch"] for r in watched] == [0, 1] and all(r["n"] == 12 for r in watched)
    assert {r["part"] for r in log} == {"watch:other"}  # nothing of mini is held out or evaluated
    summary = row["watch"]["other"]
    assert summary["max_abs_srcc"] == max(abs(r["srcc"]) for r in watched)
    assert summary["max_abs_plcc"] == max(abs(r["plcc"]) for r in watched)
    assert summary["last_srcc"] == watched[-1]["srcc"]
    total = report["watch"]["other"]
    assert total["rounds"] == 1 and total["max_abs_srcc"] == summary["max_abs_srcc"]
    assert "optimistic" in total["max_abs_note"]
    # the kept model is the last epoch's; scoring it on the watched dataset gives the last logged numbers
    scored = invoke("eval", "vipnet", "--data", "mini", "--cross", "other", "--weights", report["run"], "--json")
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["results"][0]["srcc"] == pytest.approx(watched[-1]["srcc"], abs=1e-9)
    # said as what it is (was "kept model selection unknown (weights without iqa metadata)")
    said = json.loads(scored.stdout)["selection"]
    assert said == "kept model of the last epoch (every image trains; nothing selects)"
    # LIVE Challenge without its 7 subject-training images, as VIPNet's loader reads it: in --cross and
    # --watch alike (VT-IQA scores all 17 rows of this miniature: tests/cli/test_eval.py)
    from tests.data.fixtures import FIXTURES

    FIXTURES["livew"](tmp_path / "livew_root")
    assert invoke("prepare", "livew", "--root", str(tmp_path / "livew_root"), "--splits", "1").exit_code == 0
    on_livew = invoke("eval", "vipnet", "--data", "mini", "--cross", "livew", "--weights", report["run"], "--json")
    assert on_livew.exit_code == 0, on_livew.output
    assert json.loads(on_livew.stdout)["results"][0]["n"] == 10
    with one_thread():
        args = ["--data", "mini", "--split", "whole_1", "--watch", "livew", "--epochs", "1", "--json"]
        watching = invoke("train", "vipnet", *CPU, *args)
        assert watching.exit_code == 0, watching.output
    folder = Path(json.loads(watching.stdout)["run"]) / "split-whole_1"
    logged = [json.loads(line) for line in (folder / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["n"] for r in logged if r["part"] == "watch:livew"} == {10}
    line = one_error_line(invoke("train", "vipnet", *CPU, "--data", "mini", "--split", "whole"))
    assert "--split whole trains on every image and tests none: name the datasets to score with --watch" in line
    # watching the training data itself (by name, or a copy under another name) would log "cross" scores of
    # the images the model trains on: refused before any view is made
    shutil.copy(data_dir() / "mini.h5", data_dir() / "mini_copy.h5")
    for watched in ("mini", "mini_copy"):
        args = ["--data", "mini", "--split", "whole_1", "--watch", f"other,{watched}"]
        line = one_error_line(invoke("train", "vipnet", *CPU, *args))
        assert f"--watch {watched}: that is the dataset being trained on (mini)" in line
    # another dataset holding one of the very files trained on: refused before the split trains
    mixed = tmp_path / "mixed"
    shutil.copytree(tmp_path / "other", mixed)
    borrowed = sorted((tmp_path / "mini").glob("*.png"))[0]
    shutil.copy(borrowed, mixed / "borrowed.png")
    with open(mixed / "scores.csv", "a", encoding="utf-8") as handle:
        handle.write("borrowed.png,3.0\n")
    assert invoke("prepare", "custom", "--root", str(mixed), "--name", "mixed", "--splits", "0").exit_code == 0
    line = one_error_line(invoke("train", "vipnet", *CPU, "--data", "mini", "--split", "whole_1", "--watch", "mixed"))
    assert "--watch mixed: 1 of its 13 images are byte-identical copies of images split whole_1 trains on" in line
    assert "(e.g. borrowed.png)" in line
    # a cache prepared before file digests cannot show such copies: said, not implied checked
    import h5py

    with h5py.File(data_dir() / "mixed.h5", "a") as handle:
        del handle["file_digests"]
    with one_thread():
        args = ["--data", "mini", "--split", "whole_1", "--watch", "mixed", "--epochs", "1"]
        unchecked = invoke("train", "vipnet", *CPU, *args)
    assert unchecked.exit_code == 0, unchecked.output
    assert "--watch mixed: its cache was prepared before iqa recorded file digests" in " ".join(
        unchecked.output.split()
    )


def test_koniq_is_scored_on_mos_zscore_as_the_authors_loader_reads_it(tmp_path):
    """VIPNet's `Koniq_10kFolder` reads `MOS_zscore`, for training and for every KonIQ test; it is not a
    monotonic map of the 1-5 MOS the esnthere methods use, so scoring against the MOS gave other
    correlations than the authors'."""
    import csv

    import h5py
    import numpy as np

    from iqa_cli.data.cache import open_cache
    from iqa_cli.train.metrics import spearman
    from tests.data.fixtures import FIXTURES

    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5", splits=1)
    FIXTURES["koniq"](tmp_path / "koniq_root")
    assert invoke("prepare", "koniq", "--root", str(tmp_path / "koniq_root"), "--size", "64x48").exit_code == 0
    with open_cache(data_dir() / "koniq.h5") as cache:
        mos, zscore = cache.scores.astype(float), cache.mos_zscore.astype(float)
    assert spearman(mos, zscore) < 1.0  # the fixture's z-scores rank differently, as the real ones do
    shown = invoke("prepare", "inspect", "koniq")
    assert (
        f"MOS_zscore                min {zscore.min():.4g}, max {zscore.max():.4g} (VIPNet's KonIQ label)"
        in shown.stdout
    )
    planned = invoke("train", "vipnet", *CPU, "--data", "koniq", "--print-config")
    assert "# on this data: labels KonIQ MOS_zscore (0-100), VIPNet's KonIQ label; canvas = " in planned.stdout
    with one_thread():
        trained = invoke("train", "vipnet", *CPU, "--data", "mini", "--epochs", "1", "--json")
        assert trained.exit_code == 0, trained.output
    run = json.loads(trained.stdout)["run"]

    per_image = tmp_path / "p.csv"
    args = ["--cross", "koniq", "--weights", run, "--test-patch-num", "2", "--per-image", str(per_image), "--json"]
    scored = invoke("eval", "vipnet", *args)
    assert scored.exit_code == 0, scored.output
    row = json.loads(scored.stdout)["results"][0]
    with open(per_image, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["label"]) for r in rows] == pytest.approx(zscore[[int(r["index"]) for r in rows]].tolist())
    assert [float(r["mos"]) for r in rows] == [float(r["label"]) for r in rows]  # the scale prediction_native is on
    pred = np.asarray([float(r["prediction"]) for r in rows])
    assert row["srcc"] == pytest.approx(spearman(pred, zscore), abs=1e-12)
    assert spearman(pred, zscore) != pytest.approx(spearman(pred, mos), abs=1e-6)

    # A KonIQ cache prepared before iqa kept MOS_zscore: the 1-5 MOS, said in a warning.
    with h5py.File(data_dir() / "koniq.h5", "a") as handle:
        del handle["mos_zscore"]
    old = invoke("eval", "vipnet", *args)
    assert old.exit_code == 0, old.output
    assert "keeps no MOS_zscore" in old.output
    assert json.loads(old.stdout)["results"][0]["srcc"] == pytest.approx(spearman(pred, mos), abs=1e-12)


def _predicted(model: str, photo: Path, *options: str) -> float:
    """`iqa predict vipnet`'s score of one photo with `model` and test-time `options`."""
    done = invoke("predict", "vipnet", "--weights", model, str(photo), "--device", "cpu", "--json", *options)
    assert done.exit_code == 0, done.output
    return json.loads(done.stdout)["predictions"][0]["score"]


def test_image_files_are_scored_at_the_scale_a_koniq_model_trained_at(tmp_path):
    """A model trained on KonIQ with the default canvas saw its images fitted to 384x512 (the release the
    authors read), as `iqa eval` on KonIQ still gives them; `iqa predict` and the Python scorer fitted image
    files to 768x768, so a KonIQ photo scored otherwise than in the model's own tests."""
    import numpy as np
    from PIL import Image

    from tests.data.fixtures import FIXTURES

    FIXTURES["koniq"](tmp_path / "koniq_root")
    prepare = ["prepare", "koniq", "--root", str(tmp_path / "koniq_root"), "--splits", "1"]  # its own sizes
    assert invoke(*prepare).exit_code == 0
    with one_thread():  # the default canvas (tiny runs have their own): KonIQ resolves it to 384x512
        options = ["--epochs", "1", "--canvas", "768,768", "--val-fraction", "0.35", "--json"]
        trained = invoke("train", "vipnet", *CPU, "--data", "koniq", *options)
        assert trained.exit_code == 0, trained.output
        model = str(Path(json.loads(trained.stdout)["run"]) / "split-random_0" / "best.safetensors")
        photo = tmp_path / "photo.png"
        pixels = np.random.default_rng(0).integers(0, 256, (600, 800, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photo)

        default = _predicted(model, photo)
        assert default == _predicted(model, photo, "--canvas", "384,512")
        assert default != _predicted(model, photo, "--canvas", "768,768")
        scorer = iqa_cli.load(model, device="cpu")
        assert scorer.loaded.params.canvas == (384, 512)
        assert float(scorer(str(photo))[0]) == pytest.approx(default, abs=1e-6)


def test_image_files_get_the_dpm_view_a_kadid_model_trained_with(tmp_path):
    """VIPNet's DPM sees the whole image on KADID-10k (`dpm_view auto`), and `iqa eval` on KADID-10k gives it
    so; `iqa predict` left `auto` unresolved, which made crops: a KADID-10k image scored otherwise than in
    the model's tests."""
    import numpy as np
    from PIL import Image

    from tests.data.fixtures import FIXTURES

    FIXTURES["kadid10k"](tmp_path / "kadid_root")
    assert invoke("prepare", "kadid10k", "--root", str(tmp_path / "kadid_root"), "--splits", "1").exit_code == 0
    with one_thread():
        trained = invoke("train", "vipnet", *CPU, "--data", "kadid10k", "--epochs", "1", "--json")
        assert trained.exit_code == 0, trained.output
        model = str(Path(json.loads(trained.stdout)["run"]) / "split-random_0" / "best.safetensors")
        photo = tmp_path / "photo.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(photo)

        default = _predicted(model, photo)
        assert default == _predicted(model, photo, "--dpm-view", "resize")
        assert default != _predicted(model, photo, "--dpm-view", "crop")
        assert iqa_cli.load(model, device="cpu").loaded.params.dpm_view == "resize"


def test_a_run_that_trained_on_the_mos_does_not_go_on_or_join_runs_on_mos_zscore(tmp_path):
    """A VIPNet KonIQ run started on a cache prepared before `mos_zscore` (the 1-5 MOS) must not be resumed,
    reused by a sweep or combined with runs on the z-scores now given: its model regressed another target."""
    import h5py

    from tests.cli.options import without
    from tests.data.fixtures import FIXTURES

    FIXTURES["koniq"](tmp_path / "koniq_root")
    prepare = ["prepare", "koniq", "--root", str(tmp_path / "koniq_root"), "--size", "64x48", "--splits", "2"]
    assert invoke(*prepare).exit_code == 0
    with h5py.File(data_dir() / "koniq.h5", "a") as handle:
        del handle["mos_zscore"]  # as a cache prepared before it was kept
    fast = [*without(CPU, "--val-fraction"), "--select-on", "test", "--test-patch-num", "2", "--epochs", "1"]
    with one_thread():
        for split in ("random_0", "random_1"):
            made = invoke("train", "vipnet", *fast, "--data", "koniq", "--split", split, "--name", f"old-{split}")
            assert made.exit_code == 0, made.output
        swept = invoke("train", "vipnet", *fast, "--data", "koniq", "--repeats", "1", "--name", "sweep")
        assert swept.exit_code == 0, swept.output
    runs = data_dir().parent / "runs"
    record = json.loads((runs / "old-random_0" / "run.json").read_text(encoding="utf-8"))
    assert record["data_choices"]["labels"]["column"] == "scores"
    assert record["data_choices"]["params"] == {"dpm_view": "crop", "canvas": [72, 96]}
    del record["data_choices"]  # a record written before runs kept them: the kept model's metadata says
    (runs / "old-random_0" / "run.json").write_text(json.dumps(record), encoding="utf-8")

    assert invoke(*prepare).exit_code == 0  # prepared again: the same names, scores and files, and mos_zscore
    with one_thread():
        planned = invoke("train", "vipnet", "--resume", "--name", "old-random_0", "--epochs", "2", "--print-config")
        assert "it trained with labels raw scores" in one_error_line(planned)  # the pre-flight check refuses it too
        resumed = invoke("train", "vipnet", "--resume", "--name", "old-random_0", "--epochs", "2")
        line = one_error_line(resumed)
        assert "this run cannot continue on" in line
        assert "it trained with labels raw scores (VIPNet trains on them unscaled) (scores), now KonIQ" in line
        assert "MOS_zscore (0-100), VIPNet's KonIQ label (mos_zscore); start a new run" in line
        line = one_error_line(invoke("train", "vipnet", *fast, "--data", "koniq", "--repeats", "2", "--name", "sweep"))
        assert "this sweep's run was made with other options: it trained with labels raw scores" in line
        new = invoke("train", "vipnet", *fast, "--data", "koniq", "--split", "random_1", "--name", "new-random_1")
        assert new.exit_code == 0, new.output
    # scoring the old run's model on its own split says its figures are not its training-time ones
    scored = invoke(
        "eval", "vipnet", "--data", "koniq", "--weights", str(runs / "old-random_0"), "--test-patch-num", "2"
    )
    assert scored.exit_code == 0, scored.output
    told = " ".join(scored.output.split())
    assert "trained on koniq with labels raw scores (VIPNet trains on them unscaled) (scores), now KonIQ" in told
    assert "these figures are not those of its training-time tests" in told
    fresh = invoke(
        "eval", "vipnet", "--data", "koniq", "--weights", str(runs / "new-random_1"), "--test-patch-num", "2"
    )
    assert fresh.exit_code == 0 and "training-time" not in fresh.output
    line = one_error_line(invoke("runs", "combine", str(runs / "old-random_0"), str(runs / "new-random_1")))
    assert "trained with labels raw scores (VIPNet trains on them unscaled) (scores), not KonIQ MOS_zscore" in line
    joined = invoke("runs", "combine", str(runs / "old-random_0"), str(runs / "old-random_1"), "--json")
    assert joined.exit_code == 0, joined.output

    # Other views of the same data: the canvas a cache resolves to is recorded and compared the same way
    record = json.loads((runs / "new-random_1" / "run.json").read_text(encoding="utf-8"))
    record["data_choices"]["params"]["canvas"] = [96, 128]  # as a run made when iqa kept KonIQ larger
    (runs / "new-random_1" / "run.json").write_text(json.dumps(record), encoding="utf-8")
    with one_thread():
        line = one_error_line(invoke("train", "vipnet", "--resume", "--name", "new-random_1", "--epochs", "2"))
    assert "it trained with canvas [96, 128] on this dataset, now [72, 96]; start a new run" in line


def _dpm_made_from(images: list[Path], tmp_path: Path) -> Path:
    """A tiny DPM trained on one distortion type of copies of `images` as references (its split seed differs
    from the quality caches' seed 0, so their test parts are not the DPM's test references by chance); its
    kept model."""
    refs = tmp_path / "refs"
    refs.mkdir()
    for image in images:
        shutil.copy(image, refs / image.name)
    distorted = tmp_path / "distorted.h5"
    made = invoke(
        "prepare", "distorted", "--refs", str(refs), "--out", str(distorted), "--types", "1", "--levels", "4-5",
        "--size", "96x64", "--workers", "1", "--test-fraction", "0.25", "--split-seed", "7",
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    dpm = invoke("train", "vipnet-dpm", *CPU, "--data", str(distorted), "--epochs", "1", "--out", str(tmp_path / "d"))
    assert dpm.exit_code == 0, dpm.output
    return tmp_path / "d" / "split-random_0" / "best.safetensors"


def test_a_dpm_pretrained_on_test_images_is_no_start_for_an_unseen_test(tmp_path, monkeypatch):
    """A DPM made from a folder holding the quality dataset's photos has seen their content: VIPNet trained on
    it scored those photos as unseen test images, and `--cross` onto them as a cross-dataset result."""
    monkeypatch.setenv("IQA_HOME", str(tmp_path / "home"))
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5", splits=1)
    make_cache("other", tmp_path / "other", data_dir() / "other.h5", n=24, seed=5, splits=1)
    with one_thread():  # every photo of mini, as "pristine" references
        dpm_weights = _dpm_made_from(sorted((tmp_path / "mini").glob("*.png")), tmp_path)
        line = one_error_line(invoke("train", "vipnet", *CPU, "--data", "mini", "--dpm", str(dpm_weights),
                                     "--epochs", "1", "--out", str(tmp_path / "refused")))  # fmt: skip
        assert "split 'random_0': " in line and "test images are byte-identical copies of images the DPM" in line
        assert "was pretrained on" in line and not (tmp_path / "refused" / "split-random_0").exists()
        # Trained on other photos, the model counts the DPM's references as seen: --cross onto them is refused.
        run = tmp_path / "vip"
        vip = invoke("train", "vipnet", *CPU, "--data", "other", "--dpm", str(dpm_weights), "--epochs", "1",
                     "--out", str(run))  # fmt: skip
        assert vip.exit_code == 0, vip.output
        crossed = invoke("eval", "vipnet", "--weights", str(run), "--cross", "mini", "--device", "cpu")
        line = one_error_line(crossed, after_progress=True)
        assert "are byte-identical copies of images" in line and "--drop-seen" in line


def _kadid_layout(root: Path, refs: int = 8, per_ref: int = 4) -> Path:
    """A miniature KADID-10k: `images/` with the references I01.png ... and their distortions, `dmos.csv`."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(4)
    (root / "images").mkdir(parents=True)
    rows = []
    for r in range(1, refs + 1):
        reference = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
        Image.fromarray(reference).save(root / "images" / f"I{r:02d}.png")
        for k in range(1, per_ref + 1):
            noisy = np.clip(reference + rng.normal(0, 12 * k, reference.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / "images" / f"I{r:02d}_01_{k:02d}.png")
            rows.append(f"I{r:02d}_01_{k:02d}.png,I{r:02d}.png,{5 - k * 0.8:.2f},0.3")
    (root / "dmos.csv").write_text("dist_img,ref_img,dmos,var\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_a_dpm_made_from_a_datasets_references_is_no_start_on_that_dataset(tmp_path, monkeypatch):
    """KADID-10k's 81 references are the usual small set of pristine photos: a DPM made from them has seen
    every scene of KADID-10k, so VIPNet on KADID-10k tested on images it had seen distorted."""
    monkeypatch.setenv("IQA_HOME", str(tmp_path / "home"))
    kadid = _kadid_layout(tmp_path / "kadid10k")
    assert invoke("prepare", "kadid10k", "--root", str(kadid), "-j", "1").exit_code == 0
    with one_thread():
        weights = _dpm_made_from(sorted((kadid / "images").glob("I??.png")), tmp_path)
        line = one_error_line(invoke("train", "vipnet", *CPU, "--data", "kadid10k", "--dpm", str(weights),
                                     "--epochs", "1", "--out", str(tmp_path / "refused")))  # fmt: skip
    assert "test images are byte-identical copies of images the DPM" in line and "or distortions of them" in line
    # A cache prepared before iqa recorded reference files cannot be checked: said, not silent.
    import h5py

    with h5py.File(tmp_path / "home" / "data" / "kadid10k.h5", "r+") as handle:
        del handle["reference_digests"]
    with one_thread():
        older = invoke("train", "vipnet", *CPU, "--data", "kadid10k", "--dpm", str(weights), "--epochs", "1",
                       "--out", str(tmp_path / "older"))  # fmt: skip
    assert older.exit_code == 0, older.output
    assert "prepared before iqa recorded its reference files" in older.output
    # A download without its reference files: their digests are unknown, which is said too (it read "prepared
    # before iqa recorded them" in `prepare inspect`, and training said nothing).
    for reference in (kadid / "images").glob("I??.png"):
        reference.unlink()
    assert invoke("prepare", "kadid10k", "--root", str(kadid), "-j", "1").exit_code == 0
    shown = invoke("prepare", "inspect", "kadid10k")
    assert "(0 with their file's digest; the others' files were not found when it was prepared)" in shown.output
    with one_thread():
        missing = invoke("train", "vipnet", *CPU, "--data", "kadid10k", "--dpm", str(weights), "--epochs", "1",
                         "--out", str(tmp_path / "missing"))  # fmt: skip
    assert missing.exit_code == 0, missing.output
    said = " ".join(missing.output.split())
    assert "of its" in said and "references have no file digest (their files were not found" in said
