"""`iqa al select --distances livew_ds.mat --distance-order authors` on a cache from `iqa prepare livew`:
the authors' distance file has a column for each of the 1,169 images, in their [X; Xtest] order."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy.io import loadmat, savemat
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.data.cache import open_cache
from iqa_cli.train.al.signals import esnthere_order, read_distance_file
from tests.data.fixtures import _cell_column, _row_vector, write_mat

runner = CliRunner()
AUTHORS_DS = Path(__file__).resolve().parents[2].parent / "shared" / "authors-data" / "aliqa" / "livew_ds.mat"


def _write_livew_1169(root: Path) -> list[str]:
    """The official ChallengeDB_release layout with all 1,169 rows: t1..t7 in Images/trainingImages/ first."""
    from PIL import Image

    base = root / "ChallengeDB_release"
    names = [f"t{k}.bmp" for k in range(1, 8)] + [f"{k}.bmp" for k in range(1, 1163)]
    rng = np.random.RandomState(3)
    base.mkdir(parents=True)
    tile = rng.randint(0, 255, (24, 24, 3), dtype=np.uint8)
    for i, name in enumerate(names):
        folder = base / "Images" / ("trainingImages" if i < 7 else "")
        folder.mkdir(parents=True, exist_ok=True)
        tile[0, 0] = (i % 256, i // 256, 0)  # 1,169 distinct files: copies of one file would split as one
        Image.fromarray(tile).save(folder / name)
    mos = rng.uniform(3.42, 92.43, len(names))
    write_mat(base / "Data" / "AllImages_release.mat", {"AllImages_release": _cell_column(names)})
    write_mat(base / "Data" / "AllMOS_release.mat", {"AllMOS_release": _row_vector(mos)})
    write_mat(base / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": _row_vector(np.full(len(names), 20.0))})
    return names


@pytest.fixture(scope="module")
def livew_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("livew_root")
    _write_livew_1169(root)
    out = tmp_path_factory.mktemp("livew_cache") / "livew.h5"
    result = runner.invoke(app, ["prepare", "livew", "--root", str(root), "--out", str(out), "--splits", "1"])
    assert result.exit_code == 0, result.output
    return out


def _distance_file(tmp_path: Path) -> Path:
    if AUTHORS_DS.is_file():
        return AUTHORS_DS
    path = tmp_path / "livew_ds.mat"  # the same shape and variable, when the authors' file is absent
    savemat(path, {"distance": np.random.RandomState(0).rand(5, 50, 1169)})
    return path


def test_distance_columns_follow_the_authors_cache_order(livew_cache, tmp_path):
    path = _distance_file(tmp_path)
    raw = loadmat(path)["distance"]
    with open_cache(livew_cache) as cache:
        assert len(cache) == 1169
        ours = read_distance_file(path, key="distance", n_images=1169, order="authors", dataset=cache)
        columns = esnthere_order(cache)
    # Column c of their file is [X; Xtest][c]: the seed-0 permutation of the metadata order.
    assert np.array_equal(columns, np.random.RandomState(0).permutation(1169))
    assert np.array_equal(ours[:, :, columns], raw)


def test_al_select_with_the_authors_distances_on_a_prepared_livew_cache(livew_cache, tmp_path):
    out = tmp_path / "round1.csv"
    args = ["al", "select", "--data", str(livew_cache), "--out", str(out), "--round", "1", "--budget", "25"]
    args += ["--distances", str(_distance_file(tmp_path)), "--distance-order", "esnthere"]
    result = runner.invoke(app, [*args, "--tiny", "--pretrained", "none", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    with open(out, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 59 and len({r["name"] for r in rows}) == 59


@pytest.mark.skipif(not AUTHORS_DS.is_file(), reason="../shared/authors-data/aliqa/livew_ds.mat absent")
def test_the_authors_distance_file_read_in_the_cache_s_order_is_refused(livew_cache, tmp_path):
    """`--distance-order dataset` with the authors' livew_ds.mat gave every image another image's distances
    (their columns are [X; Xtest]), and the selection ran on them; the file is known by its values."""
    args = ["al", "select", "--data", str(livew_cache), "--out", str(tmp_path / "r.csv"), "--round", "1"]
    args += ["--budget", "25", "--tiny", "--pretrained", "none", "--device", "cpu", "--distance-order", "dataset"]
    saved_again = tmp_path / "my_copy.mat"  # the same values under another name and writer
    savemat(saved_again, {"distance": loadmat(AUTHORS_DS)["distance"]})
    for path in (AUTHORS_DS, saved_again):
        result = runner.invoke(app, [*args, "--distances", str(path)])
        assert result.exit_code != 0 and not (tmp_path / "r.csv").exists()
        line = [x for x in result.stderr.splitlines() if x.startswith("error:")][0]
        assert f"--distances {path.name} is the authors' livew_ds.mat of esnthere/AL-IQA" in line
        assert "use --distance-order authors" in line
    shuffled = tmp_path / "mine.mat"  # another file of the same shape: the order is the user's to say
    savemat(shuffled, {"distance": loadmat(AUTHORS_DS)["distance"][:, :, ::-1]})
    assert runner.invoke(app, [*args, "--distances", str(shuffled)]).exit_code == 0
