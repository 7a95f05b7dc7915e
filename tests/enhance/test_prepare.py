"""The enhanced-image file: what `enhance_cache` stores, the selection rule, external images, and every
mismatch between a cache and its enhanced images giving one clear line; the CLI commands."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.data.cache import open_cache
from iqa_cli.enhance import store
from iqa_cli.enhance.classifier import build_classifier, cached_classifier, probabilities, selection
from iqa_cli.enhance.prepare import enhance_cache
from iqa_cli.errors import CheckpointError, DataError
from iqa_cli.home import data_dir
from tests.enhance.helpers import tiny_classifier
from tests.train.caches import make_cache, write_folder

runner = CliRunner()


@pytest.fixture
def cache(tmp_path):
    return make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5", n=12)


@pytest.fixture
def classifier(tmp_path):
    return tiny_classifier(tmp_path / "classifier.safetensors")


def one_error(result) -> str:
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code != 0 and len(errors) == 1, result.output
    return errors[0]


def test_enhance_cache_stores_every_image_the_rule_and_its_provenance(cache, classifier):
    summary = enhance_cache(cache, classifier=str(classifier), device="cpu")
    assert summary.path == data_dir() / "mini.enhanced.h5" and summary.count == 12 and summary.selection
    with open_cache(cache) as opened, h5py.File(summary.path) as f:
        assert f["images"].shape == opened.images.shape
        assert [n.decode() for n in f["names"][()]] == opened.names
        keep = f["keep_enhanced"][()]
        conf_i, conf_e = f["confidence_original"][()], f["confidence_enhanced"][()]
        assert np.array_equal(keep, conf_e >= conf_i) and summary.kept == int(keep.sum())
        assert f.attrs["kind"] == store.KIND and f.attrs["source_count"] == 12
        assert "Richardson-Lucy" in f.attrs["enhancement"] and f.attrs["classifier"] == str(classifier)
        assert f.attrs["source_digest"] == store.cache_digest(opened)
        operations = f["operations"][()]
        for i in range(12):  # unchanged images are stored as they are; padding stays zero
            h, w = opened.sizes[i]
            e = f["images"][i]
            if operations[i] == 0:
                assert np.array_equal(e[:h, :w], opened.image(i))
            assert not e[h:].any() and not e[:, w:].any()
    assert summary.deblurred == int(((operations & 2) > 0).sum())


def test_paired_view_puts_the_original_where_the_rule_drops_e(cache, classifier):
    enhance_cache(cache, classifier=str(classifier), device="cpu")
    with open_cache(cache) as opened:
        enhanced = store.open_enhanced(opened, cache)
        keep = enhanced.keep.copy()
        keep[:6] = [True, False, True, False, True, False]
        enhanced.keep = keep
        raw_e = enhanced.read_images(np.arange(6))
        with_rule = store.PairedDataset(opened, enhanced, use_selection=True).read_images(np.arange(6))
        without = store.PairedDataset(opened, enhanced, use_selection=False).read_images(np.arange(6))
        originals = opened.read_images(np.arange(6))
        assert with_rule.shape == originals.shape[:3] + (6,)
        assert np.array_equal(with_rule[..., :3], originals) and np.array_equal(without[..., 3:], raw_e)
        for i in range(6):
            assert np.array_equal(with_rule[i, ..., 3:], raw_e[i] if keep[i] else originals[i])
        paired = store.PairedDataset(opened, enhanced, use_selection=True)
        assert paired.names == opened.names and len(paired) == 12 and paired.split("0") is not None
        enhanced.close()


def test_rule_keeps_e_when_the_classifier_is_at_least_as_confident(classifier):
    model = build_classifier(classifier)
    torch.manual_seed(0)
    images = [torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8) for _ in range(6)]
    others = [torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8) for _ in range(6)]
    keep, conf_i, conf_e = selection(model, images, others)
    assert np.array_equal(keep, conf_e >= conf_i) and 0 < keep.sum() < 6  # both outcomes occur
    same, conf_a, conf_b = selection(model, images, images)
    assert same.all() and np.array_equal(conf_a, conf_b)  # a tie keeps E
    probs = probabilities(model, images)
    assert probs.shape == (6, 1000) and torch.allclose(probs.sum(1), torch.ones(6))


def test_a_classifier_replaced_under_its_name_is_read_again_not_served_from_memory(tmp_path):
    path = tiny_classifier(tmp_path / "classifier.safetensors", seed=0)
    first = cached_classifier(str(path), "cpu")
    assert cached_classifier(str(path), "cpu") is first  # the same file: loaded once
    replacement = tiny_classifier(tmp_path / "other.safetensors", seed=1)
    os.replace(replacement, path)  # as `iqa weights add --force` commits a file
    second = cached_classifier(str(path), "cpu")
    assert not torch.equal(second.head.weight, first.head.weight)


def test_external_enhanced_images_are_found_by_name_and_resized(cache, tmp_path):
    theirs = tmp_path / "theirs"
    write_folder(theirs, n=12, seed=5)  # same names, other pixels
    for png in sorted(theirs.glob("*.png"))[:4]:  # another tool wrote some as BMP, twice the size
        image = Image.open(png)
        image.resize((image.width * 2, image.height * 2)).save(png.with_suffix(".bmp"))
        png.unlink()
    summary = enhance_cache(cache, enhanced_root=theirs, selection=False, device="cpu")
    assert summary.enhancement.startswith("external: ") and not summary.selection and summary.kept is None
    with open_cache(cache) as opened, h5py.File(summary.path) as f:
        assert "keep_enhanced" not in f
        for i, name in enumerate(opened.names):
            h, w = opened.sizes[i]
            source = theirs / name
            expected = np.asarray(Image.open(source)) if source.is_file() else None
            if expected is not None:
                assert np.array_equal(f["images"][i][:h, :w], expected)
    (theirs / opened.names[-1]).unlink()
    with pytest.raises(DataError, match=r"1 of 12 cache images have no enhanced image here"):
        enhance_cache(cache, enhanced_root=theirs, selection=False, device="cpu")


def test_the_datasets_own_folder_given_as_enhanced_images_is_refused(cache, tmp_path, caplog):
    """`--enhanced-root` given the dataset's folder found every name there: E was I, byte for byte, and
    IEIT trained and tested without enhancement, exit 0."""
    originals = tmp_path / "mini"  # the folder `cache` was prepared from
    with pytest.raises(DataError, match=r"holds the cache's own image files \(all 12, byte for byte"):
        enhance_cache(cache, enhanced_root=originals, selection=False, device="cpu")
    assert not store.enhanced_path(cache).exists()
    theirs = tmp_path / "theirs"
    write_folder(theirs, n=12, seed=5)  # other pixels under the same names ...
    for name in ("img000.png", "img001.png"):  # ... but two left as they were
        (theirs / name).write_bytes((originals / name).read_bytes())
    with caplog.at_level("WARNING"):
        enhance_cache(cache, enhanced_root=theirs, selection=False, device="cpu")
    assert "2 of 12 enhanced images are their original file byte for byte (first: 'img000.png')" in caplog.text


def test_enhanced_images_must_belong_to_their_cache(cache, tmp_path):
    with open_cache(cache) as opened, pytest.raises(DataError, match="iqa prepare enhance"):
        store.open_enhanced(opened, cache)
    enhance_cache(cache, selection=False, device="cpu")
    other = make_cache("mini", tmp_path / "other", tmp_path / "other" / "mini.h5", n=12, seed=3)
    store.enhanced_path(cache).replace(store.enhanced_path(other))
    with open_cache(other) as opened, pytest.raises(DataError, match="different version of the cache"):
        store.open_enhanced(opened, other)
    smaller = make_cache("mini", tmp_path / "small", tmp_path / "small" / "mini.h5", n=8)
    store.enhanced_path(other).replace(store.enhanced_path(smaller))
    with open_cache(smaller) as opened, pytest.raises(DataError, match="holds 12 enhanced images but the cache has 8"):
        store.open_enhanced(opened, smaller)


def test_a_missing_classifier_says_how_to_get_it_or_skip_the_rule(cache, monkeypatch):
    monkeypatch.setenv("IQA_OFFLINE", "1")
    with pytest.raises(CheckpointError) as caught:
        enhance_cache(cache, device="cpu")
    text = str(caught.value)
    assert "iqa weights fetch deit_small_patch16_224" in text and "--no-selection" in text and "\n" not in text
    assert not store.enhanced_path(cache).exists()  # failed before writing anything


def test_cli_prepare_enhance_and_prepare_with_enhance(cache, classifier, tmp_path, monkeypatch):
    result = runner.invoke(app, ["prepare", "enhance", "mini", "--classifier", str(classifier), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["count"] == 12 and summary["kept"] is not None and summary["path"].endswith("mini.enhanced.h5")
    folder = write_folder(tmp_path / "photos", n=8)
    args = ["prepare", "custom", "--root", str(folder), "--name", "photos", "--range", "1,5", "-j", "1"]
    done = runner.invoke(app, [*args, "--enhance", "--no-selection", "--json"])
    assert done.exit_code == 0, done.output
    both = json.loads(done.stdout)
    assert both["count"] == 8 and both["enhanced"]["selection"] is False
    assert (data_dir() / "photos.enhanced.h5").is_file()
    monkeypatch.setenv("IQA_OFFLINE", "1")
    missing = runner.invoke(app, [*args, "--name", "again", "--enhance"])
    assert "--no-selection" in one_error(missing) and not (data_dir() / "again.h5").exists()
    assert "not a folder" in one_error(runner.invoke(app, ["prepare", "enhance", "mini", "--enhanced-root",
                                                           str(tmp_path / "nowhere")]))  # fmt: skip


def test_a_lost_signal_stops_the_enhancement_at_the_next_image(cache, monkeypatch):
    """A signal's exception lost in a library let `prepare enhance` enhance every image before its commit
    point noticed; it now stops at the next image and writes nothing."""
    from iqa_cli.enhance import ops
    from iqa_cli.stop import Terminated, clear_stop, request_stop

    original, calls = ops.enhance, []

    def losing_a_signal(*args, **kwargs):
        calls.append(1)
        request_stop("SIGTERM")  # what the CLI's handler leaves when its exception is discarded
        return original(*args, **kwargs)

    monkeypatch.setattr(ops, "enhance", losing_a_signal)
    try:
        with pytest.raises(Terminated):
            enhance_cache(cache, selection=False, device="cpu")
    finally:
        clear_stop()
    assert len(calls) == 1 and not (data_dir() / "mini.enhanced.h5").exists()
