"""Every official-layout fixture through the cache writer: the cache must hold exactly the fixture's
images (pixel for pixel), scores, std, names, reference ids and official split."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqa_cli.data.cache_read import describe_cache, open_cache
from iqa_cli.data.cache_write import CacheOptions, build_cache
from iqa_cli.data.datasets import get_dataset
from iqa_cli.data.resize import parse_policy
from tests.data.fixtures import FIXTURES


def _check_metadata(cache, expected) -> None:
    assert cache.names == expected.names
    np.testing.assert_array_equal(cache.scores, np.asarray(expected.scores, dtype=np.float32))
    want_std = np.asarray([r.std for r in expected.records], dtype=np.float32)
    np.testing.assert_array_equal(np.isnan(cache.std), np.isnan(want_std))
    np.testing.assert_array_equal(cache.std[~np.isnan(want_std)], want_std[~np.isnan(want_std)])
    np.testing.assert_array_equal(cache.ref_ids, [r.ref_id for r in expected.records])
    zscores = np.asarray([r.mos_zscore for r in expected.records], dtype=np.float32)
    if np.isnan(zscores).all():
        assert cache.mos_zscore is None
    else:
        np.testing.assert_array_equal(cache.mos_zscore, zscores)
    spec = get_dataset(expected.dataset)
    assert cache.attrs["dataset"] == spec.name and cache.attrs["score_type"] == spec.score_type
    assert bool(cache.attrs["lower_better"]) == spec.lower_better


@pytest.mark.parametrize("dataset", sorted(FIXTURES))
def test_cache_keeps_original_pixels_and_scores(dataset, tmp_path):
    expected = FIXTURES[dataset](tmp_path / "src")
    out = tmp_path / f"{dataset}.h5"
    summary = build_cache(get_dataset(dataset), expected.root, out, CacheOptions(resize="none", workers=1, splits=3))
    assert summary.count == len(expected.records) and not summary.skipped
    with open_cache(out) as cache:
        _check_metadata(cache, expected)
        for index, name in enumerate(cache.names):
            np.testing.assert_array_equal(cache.image(index), expected.pixels[name], err_msg=name)
        if dataset == "koniq":
            official = cache.split("official")
            sets = {"train": "training", "val": "validation", "test": "test"}
            for part, indices in official.items():
                assert {expected.records[i].official_set for i in indices} == {sets[part]}
        if get_dataset(dataset).reference_disjoint:
            for k in range(3):
                parts = cache.split(k)
                assert not set(cache.ref_ids[parts["train"]]) & set(cache.ref_ids[parts["test"]])


# Where each full-reference dataset keeps its reference files (the official layouts).
REFERENCE_FILES = {
    "kadid10k": lambda root: [p for p in (root / "images").iterdir() if p.stem.count("_") == 0],
    "live": lambda root: list((root / "refimgs").iterdir()),
    "csiq": lambda root: list((root / "src_imgs").iterdir()),
    "tid2013": lambda root: list((root / "reference_images").iterdir()),
}


@pytest.mark.parametrize("dataset", sorted(FIXTURES))
def test_a_full_reference_cache_keeps_its_reference_files_digests(dataset, tmp_path):
    """So a network pretrained on one of those files (VIPNet's DPM made from them) is known to have seen every
    distortion of it."""
    from iqa_cli.data.decode import file_digest

    expected = FIXTURES[dataset](tmp_path / "src")
    out = tmp_path / f"{dataset}.h5"
    build_cache(get_dataset(dataset), expected.root, out, CacheOptions(resize="none", workers=1, splits=0))
    with open_cache(out) as cache:
        described = describe_cache(cache)  # what `iqa prepare inspect` shows
        if dataset not in REFERENCE_FILES:
            assert cache.reference_digests is None and described["reference_files"] is None
            return
        files = REFERENCE_FILES[dataset](expected.dataset_root)
        assert cache.reference_digests is not None and (cache.reference_digests != 0).all()
        assert described["reference_files"] == described["references"] == len(files)
        assert sorted(cache.reference_digests.tolist()) == sorted(file_digest(f) for f in files)
        if dataset in ("kadid10k", "tid2013"):  # each image's reference is the file its name says
            by_stem = {f.stem.lower(): file_digest(f) for f in files}
            for index, name in enumerate(cache.names):
                stem = Path(name).name.split("_")[0].lower()
                assert cache.reference_digests[cache.ref_ids[index]] == by_stem[stem], name


@pytest.mark.parametrize("dataset", sorted(FIXTURES))
def test_cache_default_resize_policy(dataset, tmp_path):
    # The dataset's default policy; fixture images are small, so every resize here is an upscale
    # (no JPEG draft reduction) and equals a plain bicubic resize of the decoded pixels.
    expected = FIXTURES[dataset](tmp_path / "src")
    spec = get_dataset(dataset)
    policy = parse_policy(spec.default_resize)
    out = tmp_path / f"{dataset}.npz"
    build_cache(spec, expected.root, out, CacheOptions(workers=1, splits=1))
    with open_cache(out) as cache:
        _check_metadata(cache, expected)
        assert cache.attrs["resize"] == spec.default_resize
        for index, name in enumerate(cache.names):
            source = expected.pixels[name]
            size = policy.output_size(source.shape[1], source.shape[0])
            want = (
                source
                if size == (source.shape[1], source.shape[0])
                else np.asarray(Image.fromarray(source).resize(size, Image.Resampling.BICUBIC))
            )
            np.testing.assert_array_equal(cache.image(index), want, err_msg=name)
            if policy.kind == "short":
                assert min(cache.image(index).shape[:2]) == policy.short


def test_skip_bad_drops_missing_images(tmp_path):
    expected = FIXTURES["tid2013"](tmp_path / "src")
    gone = expected.names[4]
    expected.path(gone).unlink()
    summary = build_cache(
        get_dataset("tid2013"), expected.root, tmp_path / "t.h5", CacheOptions(workers=1, skip_bad=True)
    )
    assert [name for name, _ in summary.skipped] == ["distorted_images/i02_01_1.bmp"]
    with open_cache(tmp_path / "t.h5") as cache:
        assert cache.names == [n for n in expected.names if n != gone]
        assert cache.attrs["skipped"] == 1
        assert not math.isnan(float(cache.scores[0]))


@pytest.mark.parametrize("dataset", sorted(FIXTURES))
def test_iqa_prepare_command_on_each_fixture(dataset, tmp_path, _isolated_home):
    from typer.testing import CliRunner

    from iqa_cli.cli.main import app

    expected = FIXTURES[dataset](tmp_path / "src")
    result = CliRunner().invoke(app, ["prepare", dataset, "--root", str(expected.root), "-j", "1", "--splits", "2"])
    assert result.exit_code == 0, result.output
    with open_cache(_isolated_home / "data" / f"{dataset}.h5") as cache:
        _check_metadata(cache, expected)
        assert cache.attrs["resize"] == get_dataset(dataset).default_resize


def test_iqa_prepare_alias_and_missing_metadata_error(tmp_path, _isolated_home):
    from typer.testing import CliRunner

    from iqa_cli.cli.main import app

    expected = FIXTURES["livew"](tmp_path / "src")
    out = tmp_path / "c.npz"
    result = CliRunner().invoke(app, ["prepare", "livec", "--root", str(expected.root), "-j", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with open_cache(out) as cache:
        assert cache.names == expected.names
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["prepare", "csiq", "--root", str(tmp_path / "empty")])
    assert result.exit_code != 0
    assert "csiq.DMOS.xlsx" in result.output and "Traceback" not in result.output
