"""The Python API: `iqa_cli.load(...)` scores every input kind with the same numbers as `iqa predict`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import iqa_cli
from iqa_cli.cli.main import app
from iqa_cli.errors import ConfigError, DataError
from iqa_cli.home import data_dir
from tests.train.caches import make_cache

runner = CliRunner()
FAST = ["--tiny", "--freeze-epochs", "0", "--optimizer", "adamw", "--lr", "0.002", "--batch-size", "8"]
FAST += ["--dropout", "0", "--device", "cpu", "--epochs", "1"]
FAST += ["--val-fraction", "0.2"]  # a validation part of at least 3 images (a correlation needs 3)


@pytest.fixture
def trained(tmp_path) -> dict:
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    result = runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "mini", "--name", "apirun"])
    assert result.exit_code == 0, result.output
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        path = photos / f"p{i}.png"
        Image.fromarray(rng.integers(0, 255, (40 + 8 * i, 48, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return {"paths": paths, "folder": photos}


def test_methods_and_load_from_a_run_name(trained):
    assert {"vtiqa", "ieit", "aliqa", "ssliqa", "vipnet"} <= set(iqa_cli.methods())
    scorer = iqa_cli.load("apirun", device="cpu")  # the method is read from the run
    assert scorer.method == "vtiqa" and "apirun" in scorer.weights and scorer.weights.endswith("best.safetensors")
    paths = trained["paths"]
    scores = scorer([str(p) for p in paths])
    assert isinstance(scores, np.ndarray) and scores.shape == (3,) and np.isfinite(scores).all()
    # the same numbers as `iqa predict` on the same files
    result = runner.invoke(app, ["predict", "vtiqa", *map(str, paths), "--weights", "apirun", "--device", "cpu",
                                 "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    cli = {Path(p["path"]).name: p["score"] for p in json.loads(result.stdout)["predictions"]}
    np.testing.assert_allclose(scores, [cli[p.name] for p in paths], rtol=0, atol=1e-6)
    # every input kind gives the same scores
    np.testing.assert_allclose(scorer.score(str(paths[0])), scores[:1], atol=1e-6)
    np.testing.assert_allclose(np.sort(scorer(trained["folder"])), np.sort(scores), atol=1e-6)
    images = [Image.open(p) for p in paths]
    np.testing.assert_allclose(scorer(images), scores, atol=1e-6)
    arrays = [np.asarray(im.convert("RGB")) for im in images]
    np.testing.assert_allclose(scorer(arrays[1]), scores[1:2], atol=1e-6)
    batch = torch.from_numpy(arrays[0].copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
    tensor_scores = scorer(batch)
    assert isinstance(tensor_scores, torch.Tensor)
    np.testing.assert_allclose(tensor_scores.numpy(), scores[:1], atol=1e-6)
    as_uint8 = torch.from_numpy(arrays[0].copy()).permute(2, 0, 1).unsqueeze(0)  # 0-255, as stored
    np.testing.assert_allclose(scorer(as_uint8).numpy(), scores[:1], atol=1e-6)
    assert scorer.native(scores).shape == (3,)
    assert scorer.lower_better is False  # paper scale: higher is better, and the checkpoint says so


def test_files_name_the_image_behind_each_score_of_a_folder(trained):
    """A folder gives more scores than the items it was named in, in an order `score` did not say: a user
    pairing `scorer(["a.jpg", "photos/"])` with the paths passed paired scores with the wrong files."""
    scorer = iqa_cli.load("apirun", device="cpu")
    paths, folder = trained["paths"], trained["folder"]
    each = {str(p): float(scorer(str(p))[0]) for p in paths}
    mixed = [str(paths[2]), str(folder), np.zeros((40, 40, 3), dtype=np.uint8)]
    scores, files = scorer(mixed), scorer.files(mixed)
    assert len(files) == len(scores) == 5 and files[-1] == ""
    assert files[:4] == [str(paths[2]), *map(str, sorted(paths))]
    for name, score in zip(files[:4], scores[:4], strict=True):
        assert abs(each[name] - score) < 1e-6


def test_a_large_jpeg_by_path_is_decoded_as_predict_decodes_it_and_an_image_as_given(trained, tmp_path):
    """What the README says of the scorer's inputs: a JPEG at least twice the largest view on both sides is
    decoded at a reduced DCT scale from its path (as `iqa predict` does), while a PIL image or an array is
    scored as the caller decoded it."""
    from iqa_cli.train.predict import read_image

    scorer = iqa_cli.load("apirun", device="cpu")
    bound = scorer.recipe.view_bound(scorer.loaded.params)
    photo = tmp_path / "large.jpg"
    side = 2 * bound + 16
    gradient = np.linspace(0, 255, side, dtype=np.float64)
    pixels = np.stack(
        [np.add.outer(gradient, gradient) / 2, np.tile(gradient, (side, 1)), np.full((side, side), 90.0)], -1
    )
    Image.fromarray(pixels.astype(np.uint8)).save(photo, quality=90)
    reduced = read_image(photo, bound)
    assert reduced.shape[0] < side  # decoded reduced
    np.testing.assert_allclose(scorer(str(photo)), scorer(reduced), atol=1e-6)
    full = np.asarray(Image.open(photo).convert("RGB"))
    assert full.shape[0] == side
    np.testing.assert_allclose(scorer(Image.open(photo)), scorer(full), atol=1e-6)


def test_load_from_a_file_and_bad_inputs(trained):
    best = next(Path(data_dir().parent / "runs" / "apirun").glob("split-*/best.safetensors"))
    scorer = iqa_cli.load(best, device="cpu")
    assert scorer.method == "vtiqa"
    with pytest.raises(DataError, match="uint8 H x W x 3"):
        scorer(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        scorer(torch.full((1, 3, 8, 8), 2.0))
    # NaN passes a min/max bound test: it was scored as a black image, with a finite score.
    with pytest.raises(DataError, match="NaN or infinite"):
        scorer(torch.cat([torch.rand(1, 3, 8, 8), torch.full((1, 3, 8, 8), float("nan"))]))
    # Nothing to score, or images of no pixels: one error each, not a torch or division error.
    with pytest.raises(DataError, match="no images to score"):
        scorer(torch.zeros(0, 3, 8, 8))
    for empty in (torch.zeros(1, 3, 0, 8), np.zeros((0, 0, 3), dtype=np.uint8), Image.new("RGB", (0, 0))):
        with pytest.raises(DataError, match="image 0 has no pixels"):
            scorer(empty)
    # `iqa predict` refuses an image of one row or column; the scorer gave it a score.
    line = data_dir().parent / "line.png"
    Image.new("RGB", (40, 1)).save(line)
    for thin in (np.zeros((1, 1, 3), dtype=np.uint8), Image.new("RGB", (40, 1)), line):
        with pytest.raises(DataError, match=r"image 0 is only (1x1|40x1) pixels"):
            scorer(thin)
    # Bytes are a sequence of ints: the error named an int, not what was given.
    with pytest.raises(DataError, match=r"cannot score raw bytes: .*io.BytesIO"):
        scorer(b"\xff\xd8\xff")
    # A 16-bit PIL image scores as its file does (scaled onto 0-255, not saturated at 255).
    deep = Image.fromarray((np.arange(48 * 40).reshape(48, 40) * 30).astype(np.uint16))
    assert deep.mode == "I;16"
    file16 = data_dir().parent / "deep.png"
    deep.save(file16)
    np.testing.assert_allclose(scorer(deep), scorer(str(file16)), atol=1e-6)
    # A photo whose EXIF says "rotate": the opened PIL image scores as its file does (upright).
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to view
    turned = data_dir().parent / "turned.jpg"
    Image.fromarray(np.tile(np.arange(60, dtype=np.uint8)[:, None, None] * 4, (1, 40, 3))).save(turned, exif=exif)
    with Image.open(turned) as opened:
        np.testing.assert_allclose(scorer(opened), scorer(str(turned)), atol=1e-6)
    # A dark uint8 image (values 0 and 1 only) is 0-255 data, not a [0, 1] image to stretch by 255.
    dark = torch.randint(0, 2, (1, 3, 40, 40), dtype=torch.uint8)
    as_float = dark.float().div(255)
    np.testing.assert_allclose(scorer(dark).numpy(), scorer(as_float).numpy(), atol=1e-6)
    with pytest.raises(DataError, match="uint8 .0-255. or float .0-1., got torch.int64"):
        scorer(dark.long())
    with pytest.raises(ConfigError, match="no split 'nine'"):
        iqa_cli.load("apirun", split="nine", device="cpu")
    # a run whose split stopped before it finished: its best model so far is only loaded when named as a file
    from iqa_cli.home import runs_dir

    run = runs_dir() / "apirun"
    info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    info["splits"]["random_0"]["status"] = "interrupted"
    (run / "run.json").write_text(json.dumps(info), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"split random_0 is interrupted, not finished; finish it with .*--resume"):
        iqa_cli.load("apirun", device="cpu")


def test_eval_and_train_from_python(trained):
    report = iqa_cli.evaluate("vtiqa", "mini", device="cpu")
    assert report.results and report.as_dict()["median"]["splits"] == 1
    # a misspelt keyword was a TypeError of an internal dataclass; a test-time option had no way in
    with pytest.raises(ConfigError, match=r"evaluate: unknown option\(s\) splt \(options: amp, batch_size"):
        iqa_cli.evaluate("vtiqa", "mini", splt="random_0")
    import iqa_cli.train.evaluate as evaluation

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluation, "evaluate", lambda options: options)
        passed = iqa_cli.evaluate("ssliqa", "mini", test_crops=1, branch="teacher", split="random_0")
    assert passed.overrides == {"test_crops": 1, "branch": "teacher"} and passed.split == "random_0"
    summary = iqa_cli.train(
        "vtiqa", "mini", tiny=True, epochs=1, device="cpu", freeze_epochs=0, val_fraction=0.2, name="second"
    )
    assert summary is not None and summary["splits"][0]["n"] > 0
    # a misspelt training keyword was named without the option it missed
    with pytest.raises(ConfigError, match=r"unknown option\(s\) epoch \(did you mean epochs\?\)"):
        iqa_cli.train("vtiqa", "mini", tiny=True, epoch=1, device="cpu")


def test_load_from_a_run_with_a_damaged_record_is_one_iqa_error(trained):
    """`iqa_cli.load(RUN)` read run.json with `json.loads` and raised a bare JSONDecodeError (or KeyError)."""
    from iqa_cli.home import runs_dir

    run = runs_dir() / "apirun"
    (run / "run.json").write_text('{"method": ', encoding="utf-8")
    with pytest.raises(ConfigError, match="damaged run.json"):
        iqa_cli.load("apirun", device="cpu")
    (run / "run.json").write_text('{"splits": {}}', encoding="utf-8")
    with pytest.raises(ConfigError, match="names no method"):
        iqa_cli.load(str(run), device="cpu")


def test_prepare_a_custom_dataset_from_python(tmp_path):
    """`iqa_cli.prepare("custom", root)` refused `name=` and `native_range=`, and without them wrote a cache
    declaring the score range (nan, nan), which every method refused only at training."""
    from iqa_cli.data.cache import open_cache
    from tests.data.imagefolder import MIXED, make_folder

    root = tmp_path / "photos"
    csv_path = make_folder(root)
    summary = iqa_cli.prepare("custom", root, name="mine", native_range=(0, 100), workers=1, splits=2)
    assert summary.dataset == "mine" and summary.count == len(MIXED)
    assert summary.path == data_dir() / "mine.h5"
    with open_cache(summary.path) as cache:
        assert list(cache.attrs["native_range"]) == [0.0, 100.0] and cache.attrs["score_type"] == "MOS"
    observed = iqa_cli.prepare("custom", root, tmp_path / "seen.h5", csv=csv_path, columns="name,score", workers=1)
    with open_cache(observed.path) as cache:  # no range given: the observed one, as `iqa prepare custom`
        assert list(cache.attrs["native_range"]) == [min(i.score for i in MIXED), max(i.score for i in MIXED)]
    with pytest.raises(ConfigError, match=r"unknown option\(s\) nme \(options: .*name, score_type"):
        iqa_cli.prepare("custom", root, nme="mine")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) name \(options: allow_out_of_range"):
        iqa_cli.prepare("livew", root, name="mine")
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.datasets import get_dataset

    with pytest.raises(ConfigError, match="declares no score range"):
        build_cache(get_dataset("custom"), root, tmp_path / "template.h5")
    assert not (tmp_path / "template.h5").exists()


def test_evaluate_from_python_takes_one_cross_dataset(trained):
    with pytest.raises(ConfigError, match="names several datasets; cross takes one"):
        iqa_cli.evaluate("vtiqa", "mini", cross="mini,other", device="cpu")


def test_the_callers_threads_and_random_generators_are_left_as_they_were(trained, tmp_path):
    """`iqa_cli.train` left the notebook's torch on one thread (iqa's policy on 2 cores) and its global
    generators reseeded by the run's seed: the caller's `torch.rand` after the call replayed iqa's seed."""
    import random

    def draws() -> tuple:
        return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]

    def seeded(threads: int) -> None:
        torch.set_num_threads(threads)
        torch.manual_seed(1234)
        np.random.seed(1234)
        random.seed(1234)

    before = torch.get_num_threads()
    try:
        seeded(3)
        expected = draws()
        calls = {
            "train": lambda: iqa_cli.train(
                "vtiqa", "mini", tiny=True, epochs=1, device="cpu", freeze_epochs=0, val_fraction=0.2, name="kept"
            ),  # fmt: skip
            "evaluate": lambda: iqa_cli.evaluate("vtiqa", "mini", device="cpu"),
            "load and score": lambda: iqa_cli.load("apirun", device="cpu")(trained["paths"]),
            "prepare": lambda: iqa_cli.prepare(
                "custom", tmp_path / "mini", out=tmp_path / "again.h5", workers=1, name="again"
            ),
        }
        for what, call in calls.items():
            seeded(3)
            call()
            assert torch.get_num_threads() == 3, what
            assert draws() == expected, what
    finally:
        torch.set_num_threads(before)
