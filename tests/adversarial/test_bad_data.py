"""Bad data that used to be stored or read silently: scores off the scale, a lost first row, a cache
edited to leak test images into training, a cache truncated while it is read."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from iqa_cli.data.cache import build_cache, open_cache
from iqa_cli.data.cache_write import CacheOptions
from iqa_cli.errors import DataError
from tests.adversarial.helpers import digest, error_line, invoke
from tests.data.fixtures import FIXTURES
from tests.data.imagefolder import MIXED, make_folder


def _livew_with_mos(tmp_path, value: float):
    from scipy.io import loadmat, savemat

    expected = FIXTURES["livew"](tmp_path / "root")
    mos_file = next(expected.root.rglob("AllMOS_release.mat"))
    mos = loadmat(mos_file)["AllMOS_release"]
    mos[0, 9] = value
    savemat(mos_file, {"AllMOS_release": mos})
    return expected


@pytest.mark.parametrize("value", [-250.0, 1e6])
def test_scores_outside_the_declared_range_are_an_error_naming_the_image(tmp_path, value):
    expected = _livew_with_mos(tmp_path, value)
    out = tmp_path / "livew.h5"
    line = error_line(invoke("prepare", "livew", "--root", expected.root, "--out", out, "-j", "1"))
    assert f"score {value:g}" in line and "entry 10" in line and "--allow-out-of-range" in line
    assert not out.exists()
    kept = invoke("prepare", "livew", "--root", expected.root, "--out", out, "-j", "1", "--allow-out-of-range")
    assert kept.exit_code == 0, kept.output


def test_koniq_mos_below_one_is_refused(tmp_path):
    expected = FIXTURES["koniq"](tmp_path / "root")
    scores = next(expected.root.rglob("koniq10k_scores_and_distributions.csv"))
    lines = scores.read_text(encoding="utf-8").splitlines()
    cells = lines[3].split(",")
    cells[7] = "-3"
    lines[3] = ",".join(cells)
    scores.write_text("\n".join(lines) + "\n", encoding="utf-8")
    line = error_line(invoke("prepare", "koniq", "--root", expected.root, "--out", tmp_path / "k.h5", "-j", "1"))
    assert "score -3" in line and "1 to 5" in line


def test_custom_range_empty_or_not_holding_the_scores(tmp_path):
    root = tmp_path / "photos"
    csv_path = make_folder(root)  # scores 10..90
    base = ("prepare", "custom", "--root", root, "--csv", csv_path, "--name", "mine", "-j", "1")
    assert "--range: score range 3,3 is empty" in error_line(invoke(*base, "--range", "3,3"))
    assert "outside the 3 to 4 range" in error_line(invoke(*base, "--range", "3,4"))


def test_a_header_less_csv_keeps_its_first_row(tmp_path):
    root = tmp_path / "photos"
    csv_path = make_folder(root, header=False)
    rows = csv_path.read_text(encoding="utf-8").splitlines()
    csv_path.write_text("\n".join([f"{MIXED[0].name},good", *rows[1:]]) + "\n", encoding="utf-8")  # a typo in row 1
    line = error_line(invoke("prepare", "custom", "--root", root, "--csv", csv_path, "--name", "m", "-j", "1"))
    assert "line 1" in line and "good" in line  # reported, not dropped as a header
    csv_path.write_text("\n".join(["img,quality,sd", *rows]) + "\n", encoding="utf-8")  # a real header with known names
    ok = invoke("prepare", "custom", "--root", root, "--csv", csv_path, "--name", "m", "-j", "1", "--json")
    assert ok.exit_code == 0, ok.output


@pytest.mark.parametrize("typo", ["6_5", "\uff15", "infinity"])
def test_a_score_python_reads_but_no_spreadsheet_writes_is_refused(tmp_path, typo):
    """float() reads '6_5' as 65 and a full-width digit as that digit: a typo stored as a score."""
    command, out = _custom_with_row_2(tmp_path, lambda name, score, std: f"{name},{typo},{std}")
    assert f"malformed score '{typo}' at line 3" in error_line(invoke(*command))
    assert not out.exists()
    command, _ = _custom_with_row_2(tmp_path, lambda name, score, std: f"{name}, +6.5e1 ,{std}")  # a plain number
    assert invoke(*command).exit_code == 0


@pytest.mark.parametrize("column", ["score", "std"])
def test_a_value_too_large_for_the_cache_s_32_bit_floats_is_refused(tmp_path, column):
    """1e39 is a finite float64 but inf as the cache's float32: the cache was written with an infinite score."""
    big = (lambda n, s, d: f"{n},1e39,{d}") if column == "score" else (lambda n, s, d: f"{n},{s},1e39")
    command, out = _custom_with_row_2(tmp_path, big)
    line = error_line(invoke(*command))
    assert f"{column} '1e39' at line 3 is out of range" in line and "32-bit" in line
    assert not out.exists()
    command, _ = _custom_with_row_2(tmp_path, lambda n, s, d: f"{n},3e38,{d}")  # the largest stay numbers
    assert invoke(*command).exit_code == 0


@pytest.mark.parametrize("column", ["score", "std"])
def test_a_value_too_small_for_the_cache_s_32_bit_floats_is_refused(tmp_path, column):
    """1e-310 is a float64 but 0 as the cache's float32: scores of that size were all stored as 0, under a
    declared range of [1e-310, 5e-310]."""
    small = (lambda n, s, d: f"{n},1e-310,{d}") if column == "score" else (lambda n, s, d: f"{n},{s},1e-310")
    command, out = _custom_with_row_2(tmp_path, small)
    line = error_line(invoke(*command))
    assert f"{column} '1e-310' at line 3 is too small to keep" in line and "rescale" in line
    assert not out.exists()
    command, _ = _custom_with_row_2(tmp_path, lambda n, s, d: f"{n},0,{d}")  # 0 is a number a float32 keeps
    assert invoke(*command).exit_code == 0


def _custom_with_row_2(tmp_path, row):
    """`iqa prepare custom` of a folder whose CSV's second data row is `row(name, score, std)`, and its output."""
    root = tmp_path / "photos"
    csv_path = make_folder(root)
    rows = csv_path.read_text(encoding="utf-8").splitlines()
    csv_path.write_text("\n".join([*rows[:2], row(*rows[2].split(",")), *rows[3:]]) + "\n", encoding="utf-8")
    out = tmp_path / "m.h5"
    return ("prepare", "custom", "--root", root, "--csv", csv_path, "--name", "m", "--out", out, "-j", "1"), out


def test_a_negative_std_is_refused_naming_the_image(tmp_path):
    """SSL-IQA's label distributions read the std: a negative one was clipped to the floor without a word."""
    command, out = _custom_with_row_2(tmp_path, lambda name, score, std: f"{name},{score},-0.5")
    name = MIXED[1].name
    line = error_line(invoke(*command))
    assert f"image '{name}' (entry 2) has score std -0.5, expected a finite value >= 0" in line
    assert not out.exists()


def test_a_decimal_comma_is_refused_not_read_as_score_and_std(tmp_path):
    """`a.jpg,3,75` (a European spreadsheet's 3.75) was stored as score 3 with the header's two columns, or as
    score 3 and std 75 without a header."""
    root = tmp_path / "photos"
    csv_path = make_folder(root, header=False)
    rows = [line.split(",")[:2] for line in csv_path.read_text(encoding="utf-8").splitlines()]
    commas = [f"{name},{float(score):.2f}".replace(".", ",", 1).replace(",", ".", 1) for name, score in rows]
    commas = [line[::-1].replace(".", ",", 1)[::-1] for line in commas]  # the score's point becomes a comma
    assert all(line.count(",") == 2 for line in commas)
    out = tmp_path / "m.h5"
    base = ("prepare", "custom", "--root", root, "--csv", csv_path, "--name", "m", "--out", out, "-j", "1")
    csv_path.write_text("\n".join(["name,score", *commas]) + "\n", encoding="utf-8")
    assert "line 2 has 3 columns, expected the header's 2 (a decimal comma?" in error_line(invoke(*base))
    csv_path.write_text("\n".join(commas) + "\n", encoding="utf-8")
    assert "every line has a whole-number score and std, as a decimal comma" in error_line(invoke(*base))
    csv_path.write_text("\n".join(["name,score,std", *[f"{n},{s},175" for n, s in rows]]) + "\n", encoding="utf-8")
    line = error_line(invoke(*base, "--range", "0,100"))  # a std column from another scale
    assert f"image '{rows[0][0]}' has score std 175, more than the declared range 0 to 100" in line
    assert not out.exists()
    csv_path.write_text(
        "\n".join(["name,score,", *[f"{n},{s}," for n, s in rows]]) + "\n", encoding="utf-8"
    )  # trailing commas
    assert invoke(*base).exit_code == 0


def test_a_single_score_for_every_image_is_refused(tmp_path):
    """All-equal scores (a wrong column) made a cache whose every correlation is NaN."""
    root = tmp_path / "photos"
    csv_path = make_folder(root)
    rows = [line.split(",")[0] for line in csv_path.read_text(encoding="utf-8").splitlines()[1:]]
    csv_path.write_text("\n".join(["name,score", *[f"{name},3" for name in rows]]) + "\n", encoding="utf-8")
    out = tmp_path / "m.h5"
    for extra in ((), ("--range", "1,5")):
        result = invoke("prepare", "custom", "--root", root, "--csv", csv_path, "--out", out, "-j", "1", *extra)
        assert f"all {len(rows)} images have the score 3: nothing to rank" in error_line(result)
    assert not out.exists()


def test_a_name_two_files_match_ignoring_case_is_refused(tmp_path):
    """`A.JPG` in the CSV, with `a.jpg` and `A.jpg` both on disk (distinct files on Linux): the first in
    sorted order was taken, perhaps the wrong photo with this score."""
    root = tmp_path / "photos"
    csv_path = make_folder(root)
    (root / "A.jpg").write_bytes((root / "b.png").read_bytes())  # another image, one case away from a.jpg
    rows = csv_path.read_text(encoding="utf-8").splitlines()
    csv_path.write_text("\n".join([rows[0], rows[1].replace("a.jpg", "A.JPG"), *rows[2:]]) + "\n", encoding="utf-8")
    line = error_line(invoke("prepare", "custom", "--root", root, "--csv", csv_path, "--out", tmp_path / "m.h5"))
    assert "'A.JPG' matches 2 files that differ only in case (A.jpg, a.jpg); name one exactly" in line
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")  # the exact spelling wins, as before
    assert invoke("prepare", "custom", "--root", root, "--csv", csv_path, "--out", tmp_path / "m.h5").exit_code == 0


def _cache(tmp_path):
    root = tmp_path / "photos"
    csv_path = make_folder(root)
    from iqa_cli.data.datasets.custom import make_spec

    out = tmp_path / "mine.h5"
    build_cache(make_spec("mine", csv_path, root=root), root, out, CacheOptions(workers=1, splits=2, test_fraction=0.5))
    return out


def test_a_split_edited_to_share_images_is_refused_when_read(tmp_path):
    out = _cache(tmp_path)
    with h5py.File(out, "r+") as handle:
        test = handle["splits/random_0/test"][()]
        train = handle["splits/random_0/train"][()]
        del handle["splits/random_0/train"]
        handle["splits/random_0/train"] = np.concatenate([train, test[:1]])  # a test image trains
    with pytest.raises(DataError, match="train and test share 1 image"):
        open_cache(out)
    line = error_line(invoke("prepare", "inspect", out))
    assert "share 1 image" in line


def test_a_cache_truncated_while_read_is_an_error_not_black_images(tmp_path):
    out = _cache(tmp_path)
    with open_cache(out) as cache:
        first = cache.read_images([0])
        assert first.any()
        size = os.path.getsize(out)
        with open(out, "r+b") as handle:
            handle.truncate(size // 2)
        with pytest.raises(DataError, match="changed while it was being read"):
            cache.read_images([len(cache) - 1])


def test_a_cache_with_a_missing_image_chunk_is_refused_at_open(tmp_path):
    out = _cache(tmp_path)
    before = digest(out)
    with h5py.File(out, "r+") as handle:  # an image dataset whose last chunk was never written
        images = handle["images"][()]
        del handle["images"]
        dataset = handle.create_dataset("images", shape=images.shape, chunks=(1, *images.shape[1:]), dtype=np.uint8)
        for i in range(len(images) - 1):
            dataset[i] = images[i]
    assert digest(out) != before
    with pytest.raises(DataError, match=f"only {len(MIXED) - 1} of {len(MIXED)} images are stored"):
        open_cache(out)


def test_padding_that_would_blow_up_the_cache_is_refused_with_the_fix(tmp_path):
    from tests.data.imagefolder import save, smooth_image

    root = tmp_path / "odd"
    lines = ["name,score"]
    for i, (w, h) in enumerate([(8000, 4), (4, 8000), (16, 16)]):  # a few KB of images, 8000 x 8000 canvas
        save(root / f"i{i}.png", smooth_image(w, h, i))
        lines.append(f"i{i}.png,{i + 1}")
    (root / "scores.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    base = ("prepare", "custom", "--root", root, "--name", "odd", "--splits", "0", "-j", "1")
    line = error_line(invoke(*base, "--out", tmp_path / "odd.h5"))
    assert "zero-padded 8000x8000 canvas" in line and "--size" in line and "--allow-padding" in line
    assert not (tmp_path / "odd.h5").exists()
    assert invoke(*base, "--out", tmp_path / "small.h5", "--size", "64x64").exit_code == 0
