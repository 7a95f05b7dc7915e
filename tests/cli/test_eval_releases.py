"""Released models are scored only on their own test images: AL-IQA's KonIQ releases on `ind_test` of
the authors' index file, a model whose test part is unknown is refused for intra-dataset evaluation.

The KonIQ fixture has all 10,073 rows (tiny JPEGs, CSV rows not sorted by name), prepared with
`iqa prepare koniq`, so the authors' index files address it exactly as they address their cache.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from tests.cli.test_eval import one_error_line

runner = CliRunner()
AUTHORS_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "authors-data" / "aliqa"
KONIQ_N = 10073


def _write_koniq(root: Path, n: int) -> list[str]:
    """Official layout: the scores CSV (rows in a shuffled, not name-sorted order) and 1024x768/ images."""
    rng = np.random.RandomState(7)
    ids = rng.choice(np.arange(10**6, 10**7), size=n, replace=False)
    names = [f"{v}.jpg" for v in ids]
    folder = root / "koniq10k_1024x768" / "1024x768"
    folder.mkdir(parents=True)
    tiles = []
    for t in range(16):  # a few distinct tiny JPEGs, reused: the test is about which images, not pixels
        buffer = folder / names[t]
        Image.fromarray(rng.randint(0, 255, (12, 16, 3), dtype=np.uint8)).save(buffer, quality=90)
        tiles.append(buffer.read_bytes())
    for k, name in enumerate(names[16:], start=16):
        (folder / name).write_bytes(tiles[k % 16])
    with open(root / "koniq10k_scores_and_distributions.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"])
        for k, name in enumerate(names):
            mos = 1.0 + 3.0 * ((k * 7919) % 1000) / 1000
            writer.writerow([name, 0.2, 0.2, 0.2, 0.2, 0.2, 100, mos, 0.5, (mos - 1) * 25])
    return names


@pytest.fixture(scope="module")
def koniq_home(tmp_path_factory):
    root = tmp_path_factory.mktemp("koniq_root")
    names = _write_koniq(root, KONIQ_N)
    cache = tmp_path_factory.mktemp("release_cache") / "koniq.h5"
    result = runner.invoke(app, ["prepare", "koniq", "--root", str(root), "--splits", "1", "--out", str(cache)])
    assert result.exit_code == 0, result.output
    return {"cache": str(cache), "names": names, "tmp": tmp_path_factory.mktemp("release_files")}


def _tiny_release(path: Path, meta: dict) -> Path:
    """A tiny AL-IQA network saved as a release would be after `iqa weights import` (dataset, split)."""
    import torch

    from iqa_cli.models.checkpoint import save_checkpoint
    from iqa_cli.train.recipes import get_recipe

    recipe = get_recipe("aliqa")
    params = recipe.Params()
    torch.manual_seed(0)
    model = recipe.build_model(params, tiny=True, pretrained=False)
    return save_checkpoint(model, path, {"method": "aliqa", "tiny": True, **meta})


def _authors_test_names(names: list[str], ind_test: np.ndarray) -> set[str]:
    """What test_koniq_rtXX.py scores: [X; Xtest] of the name-sorted, seed-0-shuffled prep cache, at ind_test."""
    sorted_names = np.asarray(names)[np.argsort(np.asarray(names))]
    ind = np.arange(len(sorted_names))
    np.random.seed(0)
    np.random.shuffle(ind)
    cut = int(len(ind) * 0.8)
    rows = np.concatenate([sorted_names[ind[:cut]], sorted_names[ind[cut:]]])
    return {f"1024x768/{n}" for n in rows[ind_test]}


def _evaluate_release(koniq_home, split_file: Path, name: str) -> set[str]:
    tmp = koniq_home["tmp"]
    weights = _tiny_release(tmp / f"{name}.safetensors", {"dataset": "koniq", "split": f"index_file:{name}"})
    per_image = tmp / f"{name}.csv"
    args = ["eval", "aliqa", "--data", koniq_home["cache"], "--weights", str(weights), "--device", "cpu"]
    refused = runner.invoke(app, args)
    assert refused.exit_code != 0 and f"pass --split-file PATH/{name}" in one_error_line(refused)
    another = runner.invoke(app, [*args, "--split", "0"])  # its ind_train is unknown without the file
    assert "no split of this cache is known to be unseen" in one_error_line(another)
    result = runner.invoke(app, [*args, "--split-file", str(split_file), "--per-image", str(per_image), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["results"][0]["split"] == f"index_file:{name}"
    with open(per_image, encoding="utf-8") as f:
        return {row["name"] for row in csv.DictReader(f)}


def test_aliqa_release_scores_exactly_ind_test_of_a_synthetic_index_file(koniq_home):
    rng = np.random.RandomState(1)
    ind_test = np.sort(rng.permutation(KONIQ_N)[:300])
    ind_train = np.setdiff1d(np.arange(KONIQ_N), ind_test)
    split_file = koniq_home["tmp"] / "koniq_rt33_index.mat"  # no authors' file has this name
    savemat(split_file, {"ind_train": ind_train[None, :].astype(np.int64), "ind_test": ind_test[None, :]})
    scored = _evaluate_release(koniq_home, split_file, "koniq_rt33_index.mat")
    assert scored == _authors_test_names(koniq_home["names"], ind_test) and len(scored) == 300


@pytest.mark.parametrize("same_counts", [True, False])
def test_a_file_named_like_the_authors_index_file_must_hold_their_indices(koniq_home, same_counts):
    """`--split-file` was matched by name: a file regenerated under the authors' name (another seed, another
    budget) was scored as their release's test part and labelled `index_file:koniq_rt25_index.mat`."""
    tmp = koniq_home["tmp"] / ("same" if same_counts else "other")
    tmp.mkdir()
    rng = np.random.RandomState(3)
    ind_test = np.sort(rng.permutation(KONIQ_N)[: 7555 if same_counts else 300])
    forged = tmp / "koniq_rt25_index.mat"
    savemat(forged, {"ind_train": np.setdiff1d(np.arange(KONIQ_N), ind_test)[None, :], "ind_test": ind_test[None, :]})
    release = _tiny_release(tmp / "rt25.safetensors", {"dataset": "koniq", "split": "index_file:koniq_rt25_index.mat"})
    args = ["eval", "aliqa", "--data", koniq_home["cache"], "--weights", str(release), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--split-file", str(forged)])
    line = one_error_line(result)
    assert result.exit_code != 0 and str(forged) in line
    assert "named like the index file esnthere/AL-IQA @ 4583c46 published, but holds other indices" in line
    counts = "the same counts as theirs" if same_counts else "ind_train 9773, ind_test 300; theirs 2518, 7555"
    assert counts in line
    # any model's result row would carry the authors' file name: the same file is refused for it too
    other = _tiny_release(tmp / "other.safetensors", {})
    with_other = [*args[:-4], "--weights", str(other), *args[-2:], "--split-file", str(forged)]
    line = one_error_line(runner.invoke(app, with_other))
    assert "holds other indices" in line


@pytest.mark.skipif(not AUTHORS_DATA.is_dir(), reason="../shared/authors-data/aliqa (the authors' index files) absent")
def test_aliqa_release_scores_ind_test_of_the_authors_rt80_file(koniq_home):
    from scipy.io import loadmat

    split_file = AUTHORS_DATA / "koniq_rt80_index.mat"
    ind_test = loadmat(split_file)["ind_test"][0]
    scored = _evaluate_release(koniq_home, split_file, "koniq_rt80_index.mat")
    assert len(scored) == KONIQ_N - 8058 == ind_test.size
    assert scored == _authors_test_names(koniq_home["names"], ind_test)
    # the authors' file under another name is theirs (known by its indices), and reported under theirs
    renamed = koniq_home["tmp"] / "rt80.mat"
    renamed.write_bytes(split_file.read_bytes())
    weights = koniq_home["tmp"] / "koniq_rt80_index.mat.safetensors"
    args = ["eval", "aliqa", "--data", koniq_home["cache"], "--weights", str(weights), "--device", "cpu", "--json"]
    result = runner.invoke(app, [*args, "--split-file", str(renamed)])
    assert result.exit_code == 0, result.output
    assert (
        json.loads(result.stdout[result.stdout.index("{") :])["results"][0]["split"]
        == "index_file:koniq_rt80_index.mat"
    )
    rt10 = runner.invoke(app, [*args, "--split-file", str(AUTHORS_DATA / "koniq_rt10_index.mat")])
    assert "was tested on koniq_rt80_index.mat, not koniq_rt10_index.mat" in one_error_line(rt10)


def test_release_with_unknown_test_part_is_refused(koniq_home):
    tmp = koniq_home["tmp"]
    unknown = _tiny_release(tmp / "unknown.safetensors", {})
    args = ["eval", "aliqa", "--data", koniq_home["cache"], "--weights", str(unknown), "--device", "cpu"]
    line = one_error_line(runner.invoke(app, args))
    assert "not recorded" in line and "--split NAME" in line and "--cross" in line
    wrong = tmp / "mine_index.mat"
    savemat(wrong, {"ind_train": np.arange(3)[None, :], "ind_test": np.arange(3, 6)[None, :]})
    release = _tiny_release(tmp / "rt25.safetensors", {"dataset": "koniq", "split": "index_file:koniq_rt25_index.mat"})
    line = one_error_line(runner.invoke(app, [*args[:-2], "--weights", str(release), "--split-file", str(wrong)]))
    assert "was tested on koniq_rt25_index.mat, not mine_index.mat" in line
    crossed = runner.invoke(app, [*args[:-2], "--cross", koniq_home["cache"], "--split-file", str(wrong)])
    assert "--split-file names a test part of --data; --cross scores every image" in one_error_line(crossed)


def test_a_release_scored_on_a_reduced_release_of_its_dataset_says_so(koniq_home):
    """The authors resized KonIQ-10k's 1024x768 files to their views; a cache of a smaller release (here the
    fixture's tiny images, as KonIQ's 512x384 folder would be) stores them at `none` too, so the stored-size
    check passed and the figures read as the release's own, with no word for IEIT and AL-IQA (whose 244 px
    views are not upscaled, so the upscaling note stays silent)."""
    from iqa_cli.weights.importer import authors_split_meta

    tmp = koniq_home["tmp"]
    name = "koniq_rt33_index.mat"  # a stand-in for the authors' file, which this test does not need
    split_file = tmp / name
    rng = np.random.RandomState(2)
    ind_test = np.sort(rng.permutation(KONIQ_N)[:300])
    savemat(
        split_file, {"ind_train": np.setdiff1d(np.arange(KONIQ_N), ind_test)[None, :], "ind_test": ind_test[None, :]}
    )
    meta = {**authors_split_meta("aliqa_koniq10k_rt25"), "source_sha256": "0" * 64}  # as `iqa weights import` writes
    meta["split"] = f"index_file:{name}"
    weights = _tiny_release(tmp / "rt25.safetensors", meta)
    args = ["eval", "aliqa", "--data", koniq_home["cache"], "--weights", str(weights), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--split-file", str(split_file), "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout[result.stdout.index("{") :])["results"]
    assert (row["trained_resize"], row["resize"]) == ("none", "none, from a 16 px release")
    said = " ".join(result.stderr.split())
    assert "is its authors' model, trained and tested on views they resized from the original files of koniq" in said
    assert "prepare koniq from its full-size files (1024 px) with --size none for theirs" in said


def test_a_release_whose_split_is_not_public_is_known_to_have_trained_on_its_dataset(koniq_home):
    """SSL-IQA's KonIQ student records no split (theirs are not public), and its import recorded no dataset
    either: `--cross koniq` read as a cross-dataset result on the images it trained on, and `--data koniq`
    scored the cache's first split as its test part."""
    from iqa_cli.weights.importer import authors_split_meta

    meta = authors_split_meta("ssliqa_student_koniq10k")
    assert meta == {"dataset": "koniq"}
    weights = _tiny_release(koniq_home["tmp"] / "student_like.safetensors", meta)
    args = ["eval", "aliqa", "--weights", str(weights), "--device", "cpu"]
    line = one_error_line(runner.invoke(app, [*args, "--data", koniq_home["cache"]]))
    assert "it was trained on koniq, but on which of its images is not recorded" in line and "--split NAME" in line
    crossed = runner.invoke(app, [*args, "--cross", koniq_home["cache"], "--json"])
    assert crossed.exit_code == 0, crossed.output
    (row,) = json.loads(crossed.stdout[crossed.stdout.index("{") :])["results"]
    assert row["includes_training_images"] and row["own_dataset"] and row["trained_on"] == "koniq"
    assert "was trained on koniq (on images not recorded): --cross scores every image" in " ".join(
        crossed.stderr.split()
    )
    named = runner.invoke(app, [*args, "--data", koniq_home["cache"], "--split", "0", "--json"])
    assert named.exit_code == 0 and "it trained on; split 0 may hold some" in " ".join(named.stderr.split())
