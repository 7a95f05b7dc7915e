"""`iqa prepare` -> `iqa train ssliqa` -> `iqa eval ssliqa` / `iqa predict ssliqa` end to end on small real
caches: a synthetic one whose quality is its noise strength (the recipe must learn its ranking) and the
KonIQ miniature (its c1..c5 rating distributions must reach training)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.data.cache import open_cache
from iqa_cli.models.checkpoint import read_state_dict
from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.trainer import resolve_config
from tests.cli.options import without
from tests.cli.test_train import one_error_line
from tests.data.fixtures import FIXTURES
from tests.train.caches import write_folder

runner = CliRunner()
FAST = ["--tiny", "--device", "cpu", "--log-every", "1000"]
FAST += ["--val-fraction", "0.25"]  # a validation part of at least 3 images (a correlation needs 3)
SPLIT = ["--splits", "1", "--test-fraction", "0.25", "-j", "1"]


def iqa(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_prepare_train_eval_predict_learns_the_noise_ranking(tmp_path, _isolated_home):
    root = write_folder(tmp_path / "src", 96)  # noise strength falls with the score (tests/train/fakes.py)
    prepared = iqa("prepare", "custom", "--root", root, "--name", "synth", "--range", "1,5", *SPLIT)
    assert prepared.exit_code == 0, prepared.output
    # 72 training images: 32 labelled (8 of them validate), 40 unlabelled; 24 test images. Each image 4 times
    # per epoch: the unlabelled loader (160 rows / 16) is the shorter, 10 steps. The random-init tiny
    # networks need a larger learning rate than the ImageNet-initialised protocol's 2e-4.
    args = [*FAST, "--data", "synth", "--labeled", "32", "--val-fraction", "0.25", "--patch-num", "4", "--lr", "1e-3"]
    args += ["--epochs", "3"]
    trained = iqa("train", "ssliqa", *args, "--json")
    assert trained.exit_code == 0, trained.output
    report = json.loads(trained.stdout)
    row = report["splits"][0]
    assert report["selected_on"] == "val" and row["n"] == 24 and row["epochs"] == 3
    # Measured: test SRCC 0.94 after the 30 steps (chance: 0 +- 0.21 for 24 images).
    assert row["srcc"] > 0.6, row
    assert "32 labelled images (8 of them held out for model selection), 40 unlabelled; 10 steps" in trained.output
    assert row["steps"] == 30
    state, meta = read_state_dict(row["weights"])
    assert {k.split(".")[0] for k in state} == {"student", "teacher"} and meta["model"] == "ssliqa"
    split = report["run"] + "/split-random_0"
    log = [json.loads(line) for line in open(f"{split}/log.jsonl", encoding="utf-8")]
    assert [(r["epoch"], r["part"]) for r in log] == [(e, p) for e in range(3) for p in ("val", "test")]

    # The newest run on synth, scored with the student (the default) and its saved test-time protocol:
    # the numbers training reported for the kept model.
    per_image = tmp_path / "per_image.csv"
    student = iqa("eval", "ssliqa", "--data", "synth", "--device", "cpu", "--json", "--per-image", per_image)
    assert student.exit_code == 0, student.output
    result = json.loads(student.stdout)["results"][0]
    assert result["srcc"] == row["srcc"] and result["plcc"] == pytest.approx(row["plcc"], abs=1e-6)
    assert len(per_image.read_text(encoding="utf-8").splitlines()) == 25
    teacher = iqa("eval", "ssliqa", "--data", "synth", "--device", "cpu", "--json", "--branch", "teacher")
    assert teacher.exit_code == 0, teacher.output
    assert json.loads(teacher.stdout)["results"][0]["plcc"] != row["plcc"]
    one_crop = iqa("eval", "ssliqa", "--data", "synth", "--device", "cpu", "--json", "--test-crops", "1")
    assert one_crop.exit_code == 0 and json.loads(one_crop.stdout)["results"][0]["plcc"] != row["plcc"]
    # a slip of the crop count is one line, not the allocator's crash (exit 1) at the first batch
    too_many = iqa("eval", "ssliqa", "--data", "synth", "--device", "cpu", "--test-crops", "99999999999")
    assert too_many.exit_code == 2 and "--test-crops: must be at most 256" in too_many.output

    predicted = iqa(
        "predict", "ssliqa", root / "img000.png", root / "img001.png", "--weights", row["weights"], "--json"
    )
    assert predicted.exit_code == 0, predicted.output
    scores = [p["score"] for p in json.loads(predicted.stdout)["predictions"]]
    assert len(scores) == 2 and all(1.0 <= s <= 5.0 for s in scores)
    # `iqa predict` takes the test-time options `iqa eval` and the Python scorer take (it took none)
    files = [root / "img000.png", root / "img001.png"]
    by_teacher = iqa("predict", "ssliqa", *files, "--weights", row["weights"], "--json", "--branch", "teacher")
    assert by_teacher.exit_code == 0, by_teacher.output
    teacher_scores = [p["score"] for p in json.loads(by_teacher.stdout)["predictions"]]
    assert teacher_scores != scores
    import iqa_cli

    in_python = iqa_cli.load(row["weights"], device="cpu", branch="teacher")([str(f) for f in files])
    assert teacher_scores == pytest.approx(list(in_python), abs=1e-6)


def test_koniq_rating_distributions_reach_training(tmp_path, _isolated_home):
    expected = FIXTURES["koniq"](tmp_path / "src")
    prepared = iqa("prepare", "koniq", "--root", expected.root, "-j", "1", "--splits", "1")
    assert prepared.exit_code == 0, prepared.output
    recipe = get_recipe("ssliqa")
    params = resolve_config(recipe, tiny=True, config_file=None, overrides={}).params
    with open_cache(_isolated_home / "data" / "koniq.h5") as cache:
        labels, _ = recipe.labels(cache, params, "koniq")
        targets = recipe.train_targets(cache, labels, params)
        shares = np.asarray([r.distribution for r in expected.records], np.float32)
        assert cache.distributions.shape == (12, 5) and np.allclose(targets, shares, atol=1e-6)
    # Ten training images, six labelled; the authors' protocol (no model selection, one evaluation at the end).
    args = [*without(FAST, "--val-fraction"), "--data", "koniq", "--labeled", "6", "--select-on", "test"]
    args += ["--eval-every", "2", "--epochs", "2"]
    trained = iqa("train", "ssliqa", *args, "--batch-size", "2", "--ratio", "1", "--patch-num", "1", "--json")
    assert trained.exit_code == 0, trained.output
    row = json.loads(trained.stdout)["splits"][0]
    assert row["best_epoch"] == 1 and row["selected_on"] == "test"
    # the authors' supervised-only baseline: labelled images only, both branches scorable
    base = iqa(
        "train", "ssliqa", *args, "--batch-size", "2", "--patch-num", "1", "--baseline", "--name", "base", "--json"
    )
    assert base.exit_code == 0, base.output
    assert "0 unlabelled rows" in base.output
    teacher = iqa("eval", "ssliqa", "--data", "koniq", "--branch", "teacher", "--device", "cpu", "--json")
    assert teacher.exit_code == 0, teacher.output


def test_bad_requests_give_one_line(tmp_path, _isolated_home):
    write_folder(tmp_path / "src", 16)
    assert iqa("prepare", "custom", "--root", tmp_path / "src", "--name", "small", *SPLIT).exit_code == 0
    too_many = iqa("train", "ssliqa", *FAST, "--data", "small", "--labeled", "50")
    assert "--labeled 50 is more than the 12 training images of split 'random_0'" in one_error_line(
        too_many, after_progress=True
    )
    assert "branch must be one of student, teacher" in one_error_line(
        iqa("train", "ssliqa", *FAST, "--data", "small", "--branch", "both")
    )
    assert "--label-scale must be one of paper, range" in one_error_line(
        iqa("train", "ssliqa", *FAST, "--data", "small", "--label-scale", "native")
    )
    assert "no local ssliqa run" in one_error_line(iqa("eval", "ssliqa", "--data", "small", "--branch", "teacher"))


@pytest.mark.parametrize("network", ["googlenet", "inceptionresv2"])
def test_other_network_pairs_train_and_evaluate_from_the_cli(tmp_path, _isolated_home, network):
    expected = FIXTURES["koniq"](tmp_path / "src")
    assert iqa("prepare", "koniq", "--root", expected.root, "-j", "1", "--splits", "1").exit_code == 0
    args = [*without(FAST, "--val-fraction"), "--data", "koniq", "--labeled", "6", "--select-on", "test"]
    args += ["--epochs", "1", "--network", network]
    trained = iqa("train", "ssliqa", *args, "--batch-size", "2", "--ratio", "1", "--patch-num", "1", "--json")
    assert trained.exit_code == 0, trained.output
    row = json.loads(trained.stdout)["splits"][0]
    _state, meta = read_state_dict(row["weights"])
    assert json.loads(meta["params"])["network"] == network
    # eval rebuilds the pair the checkpoint was trained with (the default pair is TReS)
    for branch in ("student", "teacher"):
        scored = iqa("eval", "ssliqa", "--data", "koniq", "--branch", branch, "--device", "cpu", "--json")
        assert scored.exit_code == 0, scored.output
    assert "network must be one of tres, alexnet, inceptionresv2, googlenet" in one_error_line(
        iqa("train", "ssliqa", *FAST, "--data", "koniq", "--network", "vgg")
    )


def _import_and_score_by_hand(
    tmp_path, home, *, fixture: str, model: str, file_name: str, prefix: str, count: int, params
):
    """Save the fixture's filled network as the authors' script does (`state_dict`, keys under `prefix`),
    import it as `their_file`, prepare `count` images as `few`, and score them by the authors' test
    protocol by hand: the network alone on the 512 x 384 view, `params.test_crops` crops averaged.
    Returns (names, images, scores)."""
    import torch

    from iqa_cli.models import create, load_checkpoint
    from iqa_cli.models.ssliqa import expected_score
    from tests.reference_fixtures import filled_state_dict, load_fixture

    manifest, _ref = load_fixture(fixture)
    authors = tmp_path / file_name
    state = {f"{prefix}{key}": value for key, value in filled_state_dict(manifest).items()}
    torch.save({"epoch": 9, "state_dict": state, "optimizer": {}}, authors)
    imported = runner.invoke(app, ["weights", "import", model, str(authors), "--name", "their_file"])
    assert imported.exit_code == 0, imported.output
    write_folder(tmp_path / "src", count)
    prepared = iqa("prepare", "custom", "--root", tmp_path / "src", "--name", "few", "-j", "1", "--splits", "0")
    assert prepared.exit_code == 0, prepared.output

    recipe = get_recipe("ssliqa")
    network = load_checkpoint(create(model).eval(), authors)
    with open_cache(home / "data" / "few.h5") as cache:
        names = list(cache.names)
        images = [torch.from_numpy(np.ascontiguousarray(cache.image(i))).permute(2, 0, 1) for i in range(len(names))]
    with torch.inference_mode():
        (crops,) = recipe.eval_inputs(recipe.stored_views(images, params), params)
        by_hand = expected_score(network(crops)[0]).reshape(-1, params.test_crops).mean(dim=1).tolist()
    return names, images, by_hand


def _per_image(path) -> dict[str, float]:
    with open(path, encoding="utf-8", newline="") as handle:
        return {row["name"]: float(row["prediction"]) for row in csv.DictReader(handle)}


@pytest.mark.reference
@pytest.mark.parametrize(
    ("model", "fixture"), [("ssliqa-student", "ssliqa_student"), ("ssliqa-googlenet", "ssliqa_googlenet")]
)
def test_the_authors_student_only_checkpoint_is_imported_and_scored(tmp_path, _isolated_home, model, fixture):
    """The authors' scripts save the student alone (`Alex_netRKD100_resnet_1_2KS-00009.pt`: `state_dict`
    under DataParallel's `module.`); `iqa eval ssliqa` refused it ("for method 'ssliqa-student'")."""
    import iqa_cli

    params = get_recipe("ssliqa").Params(variant="student", network="googlenet" if "googlenet" in model else "alexnet")
    names, images, by_hand = _import_and_score_by_hand(
        tmp_path, _isolated_home, fixture=fixture, model=model, file_name="Alex_netRKD100_resnet_1_2KS-00009.pt",
        prefix="module.", count=8, params=params,
    )  # fmt: skip
    scorer = iqa_cli.load("their_file", device="cpu")  # its method found from the network it was imported as
    assert scorer(images).tolist() == pytest.approx(by_hand, abs=1e-5)

    per_image = tmp_path / "scores.csv"
    scored = iqa("eval", "ssliqa", "--weights", "their_file", "--cross", "few", "--json", "--per-image", per_image)
    if model == "ssliqa-googlenet":  # the fixture's fill scores every image alike: no correlation, an error
        assert "constant predictions" in one_error_line(scored, after_progress=True)
    else:
        assert scored.exit_code == 0, scored.output
        assert json.loads(scored.stdout)["results"][0]["n"] == 8
        by_eval = _per_image(per_image)
        assert [by_eval[name] for name in names] == pytest.approx(by_hand, abs=1e-5)

    assert "holds the student only" in one_error_line(
        iqa("eval", "ssliqa", "--weights", "their_file", "--cross", "few", "--branch", "teacher"),
        after_progress=True,
    )
    assert "holds the 'student' variant, not 'pair'" in one_error_line(
        iqa("eval", "ssliqa", "--weights", "their_file", "--cross", "few", "--variant", "pair"),
        after_progress=True,
    )
    assert "evaluation-only" in one_error_line(iqa("train", "ssliqa", *FAST, "--data", "few", "--variant", "student"))


@pytest.mark.reference
def test_the_authors_baseline_teacher_network_is_imported_and_scored(tmp_path, _isolated_home):
    """The authors' baseline.py trains one network alone and saves it (`Resnet_101BL_2KS-00009.pt`, no
    DataParallel prefix), and their test.py scores such a ResNet-101; `iqa eval ssliqa` refused it ("for
    method 'ssliqa-teacher'")."""
    # 2 test crops instead of 10, to keep ResNet-101 quick
    params = get_recipe("ssliqa").Params(variant="teacher", branch="teacher", network="alexnet", test_crops=2)
    names, _images, by_hand = _import_and_score_by_hand(
        tmp_path, _isolated_home, fixture="ssliqa_teacher", model="ssliqa-teacher",
        file_name="Resnet_101BL_2KS-00009.pt", prefix="", count=6, params=params,
    )  # fmt: skip

    per_image = tmp_path / "scores.csv"
    args = ["--weights", "their_file", "--cross", "few", "--test-crops", "2", "--device", "cpu"]
    scored = iqa("eval", "ssliqa", *args, "--json", "--per-image", per_image)
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["results"][0]["n"] == 6
    by_eval = _per_image(per_image)
    assert [by_eval[name] for name in names] == pytest.approx(by_hand, abs=1e-5)

    assert "holds the teacher only" in one_error_line(
        iqa("eval", "ssliqa", *args, "--branch", "student"), after_progress=True
    )
    assert "holds the 'teacher' variant, not 'student'" in one_error_line(
        iqa("eval", "ssliqa", *args, "--variant", "student"), after_progress=True
    )
    assert "evaluation-only" in one_error_line(iqa("train", "ssliqa", *FAST, "--data", "few", "--variant", "teacher"))
