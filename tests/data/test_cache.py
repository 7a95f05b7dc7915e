"""The cache writer and reader: contents, padding, formats, splits, atomicity, bad input."""

from __future__ import annotations

import math
import os
import pickle

import h5py
import numpy as np
import pytest
from PIL import Image

from iqa_cli.data import cache_write
from iqa_cli.data.cache import build_cache, describe_cache, load_all_images, open_cache
from iqa_cli.data.cache_write import CacheOptions
from iqa_cli.data.datasets.custom import make_spec
from iqa_cli.data.decode import decode_image, file_digest
from iqa_cli.data.records import DatasetSpec, Record
from iqa_cli.data.splits import random_splits
from iqa_cli.errors import DataError
from tests.data.imagefolder import MIXED, make_folder, save, smooth_image, truncate


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "data"
    csv_path = make_folder(root)
    return root, csv_path


def _spec(folder, **kwargs):
    root, csv_path = folder
    return make_spec("mine", csv_path, root=root, **kwargs)


def _build(folder, out, **kwargs):
    kwargs.setdefault("workers", 1)
    rest = {k: kwargs.pop(k) for k in ("records", "progress") if k in kwargs}
    return build_cache(_spec(folder), folder[0], out, CacheOptions(**kwargs), **rest)


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("fmt", ["h5", "npz"])
def test_original_sizes_are_padded_top_left_with_sizes(folder, tmp_path, fmt):
    out = tmp_path / "out" / f"mine.{fmt}"
    summary = _build(folder, out, resize="none", splits=2)
    assert summary.path == out and summary.format == fmt and summary.count == len(MIXED)
    assert summary.shape == (6, 48, 64, 3) and summary.padded and summary.bytes == out.stat().st_size
    with open_cache(out) as cache:
        assert len(cache) == 6 and cache.shape == (6, 48, 64, 3) and cache.images.dtype == np.uint8
        assert cache.sizes.dtype == np.int32
        assert cache.sizes.tolist() == [[i.height, i.width] for i in MIXED]
        assert cache.names == [i.name for i in MIXED]
        all_images = cache.read_images(np.arange(6))
        for index, item in enumerate(MIXED):
            expected = decode_image(folder[0] / item.name)
            height, width = item.height, item.width
            assert np.array_equal(all_images[index, :height, :width], expected), item.name
            assert not all_images[index, height:].any() and not all_images[index, :, width:].any()  # zero padding
            assert np.array_equal(cache.image(index), expected)
            if not item.name.lower().endswith((".jpg", ".jpeg")):  # lossless files: pixel-exact
                with Image.open(folder[0] / item.name) as im:
                    assert np.array_equal(expected, np.asarray(im.convert("RGB")))


@pytest.mark.parametrize("fmt", ["h5", "npz"])
def test_scores_std_names_and_attributes(folder, tmp_path, fmt):
    out = tmp_path / f"mine.{fmt}"
    _build(folder, out, resize="20x16", splits=3, split_seed=11)
    with open_cache(out) as cache:
        assert cache.scores.dtype == np.float32 and cache.std.dtype == np.float32
        assert cache.scores.tolist() == [i.score for i in MIXED]
        for value, item in zip(cache.std.tolist(), MIXED, strict=True):
            assert (math.isnan(value) and item.std is None) or value == pytest.approx(item.std)
        assert cache.ref_ids.dtype == np.int32 and (cache.ref_ids == -1).all()
        assert cache.shape == (6, 16, 20, 3) and not cache.padded and (cache.sizes == [16, 20]).all()
        attrs = cache.attrs
        assert attrs["format_version"] == 1 and attrs["dataset"] == "mine" and attrs["score_type"] == "MOS"
        assert attrs["native_range"] == [10.0, 90.0] and attrs["lower_better"] is False
        assert attrs["resize"] == "20x16" and attrs["source_root"] == str(folder[0])
        assert attrs["skipped"] == 0 and attrs["skipped_names"] == [] and attrs["count"] == 6
        assert attrs["created"].endswith("+00:00") and attrs["iqa_version"]
        assert attrs["split_seed"] == 11 and attrs["split_count"] == 3
        assert cache.split_names() == ["random_0", "random_1", "random_2"]
        regenerated = random_splits(6, count=3, seed=11)
        for name, parts in regenerated.items():
            stored = cache.split(name)
            assert list(stored) == ["train", "test"]
            assert all(np.array_equal(stored[p], parts[p]) for p in parts)
        assert np.array_equal(cache.split("2")["test"], cache.split("random_2")["test"])
        with pytest.raises(DataError, match="no split 'official'"):
            cache.split("official")
        info = describe_cache(cache)
        assert info["count"] == 6 and info["std_available"] == 4 and info["scores"]["max"] == 90.0
        assert info["splits"]["random_1"] == {"train": 4, "test": 2}


def test_short_side_mixed_orientation(folder, tmp_path):
    out = tmp_path / "short.h5"
    summary = _build(folder, out, resize="short:12", splits=0)
    assert summary.resize == "short:12" and summary.padded
    with open_cache(out) as cache:
        assert cache.sizes.tolist() == [[12, 16], [16, 12], [12, 16], [12, 12], [12, 19], [16, 12]]
        assert cache.shape == (6, 16, 19, 3) and cache.split_names() == []
        expected = decode_image(folder[0] / "e.jpeg", (19, 12))
        assert np.array_equal(cache.image(4), expected)


def test_reference_ids_and_official_split_from_records(tmp_path):
    paths = [save(tmp_path / "img" / f"{i}.png", smooth_image(8, 8, seed=i)) for i in range(20)]
    records = [
        Record(
            path=p,
            name=f"img/{p.name}",
            score=float(i),
            ref_id=i // 4,
            official_set=("training", "validation", "test", "training")[i % 4],
        )
        for i, p in enumerate(paths)
    ]
    spec = DatasetSpec(
        name="synthetic",
        title="five references",
        parse=lambda root: records,
        score_type="DMOS",
        native_range=(0.0, 100.0),
        lower_better=True,
        default_resize="none",
        reference_disjoint=True,
    )
    out = tmp_path / "syn.npz"
    summary = build_cache(spec, tmp_path, out, CacheOptions(workers=1, splits=4), records=records)
    assert summary.splits["official"] == {"train": 10, "val": 5, "test": 5}
    with open_cache(out) as cache:
        assert cache.ref_ids.tolist() == [i // 4 for i in range(20)]
        assert cache.attrs["reference_disjoint"] is True and cache.attrs["lower_better"] is True
        assert cache.split_names() == ["random_0", "random_1", "random_2", "random_3", "official"]
        assert list(cache.split("official")) == ["train", "val", "test"]
        for name in cache.split_names()[:4]:
            parts = cache.split(name)
            assert not set(cache.ref_ids[parts["train"]]) & set(cache.ref_ids[parts["test"]])
            assert parts["test"].size == 4  # one of five references


@pytest.mark.parametrize("fmt", ["h5", "npz"])
def test_rating_distributions_are_stored_when_given(tmp_path, fmt):
    paths = [save(tmp_path / "img" / f"{i}.png", smooth_image(8, 8, seed=i)) for i in range(4)]
    shares = [(0.1, 0.2, 0.3, 0.2, 0.2), None, (0.0, 0.0, 0.0, 0.0, 1.0), (0.2, 0.2, 0.2, 0.2, 0.2)]
    records = [
        Record(path=p, name=f"img/{p.name}", score=2.0 + i / 2, distribution=d)
        for i, (p, d) in enumerate(zip(paths, shares, strict=True))
    ]
    spec = DatasetSpec("rated", "rated", lambda root: records, "MOS", (1.0, 5.0), False, "none")
    out = tmp_path / f"rated.{fmt}"
    build_cache(spec, tmp_path, out, CacheOptions(workers=1, splits=1), records=records)
    with open_cache(out) as cache:
        stored = cache.distributions
        assert stored.dtype == np.float32 and stored.shape == (4, 5)
        assert np.isnan(stored[1]).all()  # an image without one: a NaN row
        assert np.allclose(stored[[0, 2, 3]], np.asarray([shares[0], shares[2], shares[3]], np.float32))
        assert describe_cache(cache)["distributions"] == 5
    plain = tmp_path / f"plain.{fmt}"  # no image has one: no array, read as None (as every older cache)
    build_cache(
        spec, tmp_path, plain, CacheOptions(workers=1), records=[Record(r.path, r.name, r.score) for r in records]
    )
    with open_cache(plain) as cache:
        assert cache.distributions is None and describe_cache(cache)["distributions"] is None
    mixed = [*records[:1], Record(paths[1], "img/1.png", 3.0, distribution=(0.5, 0.5))]
    with pytest.raises(DataError, match=r"different numbers of categories \(\[2, 5\]\)"):
        build_cache(spec, tmp_path, tmp_path / f"mixed.{fmt}", CacheOptions(workers=1), records=mixed)


def test_damaged_distributions_are_refused(tmp_path):
    paths = [save(tmp_path / "img" / f"{i}.png", smooth_image(8, 8, seed=i)) for i in range(3)]
    records = [
        Record(path=p, name=f"img/{p.name}", score=2.0 + i, distribution=(0.5, 0.5)) for i, p in enumerate(paths)
    ]
    spec = DatasetSpec("rated", "rated", lambda root: records, "MOS", (1.0, 5.0), False, "none")
    out = tmp_path / "rated.h5"
    build_cache(spec, tmp_path, out, CacheOptions(workers=1, splits=0), records=records)
    with h5py.File(out, "a") as f:
        del f["distributions"]
        f["distributions"] = np.zeros((2, 5), np.float32)
    with pytest.raises(DataError, match=r"'distributions' has shape \(2, 5\), expected \(3, categories\)"):
        open_cache(out)


def test_read_images_any_order(folder, tmp_path):
    out = tmp_path / "order.h5"
    _build(folder, out, resize="10x10", splits=0)
    with open_cache(out) as cache:
        everything = load_all_images(cache)
        assert everything.shape == (6, 10, 10, 3)
        for order in ([5, 0, 3], [1, 2, 3], [4, 4, 0], [], [2]):
            got = cache.read_images(order)
            assert got.shape == (len(order), 10, 10, 3)
            assert np.array_equal(got, everything[order])
        with pytest.raises(IndexError):
            cache.read_images([6])
    assert np.array_equal(load_all_images(out), everything)


def test_parallel_workers_write_the_same_images(folder, tmp_path):
    _build(folder, tmp_path / "one.h5", resize="short:20", splits=1)
    _build(folder, tmp_path / "two.h5", resize="short:20", splits=1, workers=2)
    with open_cache(tmp_path / "one.h5") as one, open_cache(tmp_path / "two.h5") as two:
        assert np.array_equal(load_all_images(one), load_all_images(two))
        assert np.array_equal(one.sizes, two.sizes)


def test_npz_is_a_plain_npz_and_memory_mapped(folder, tmp_path):
    out = tmp_path / "plain.npz"
    _build(folder, out, resize="none", splits=2)
    with np.load(out) as plain, open_cache(out) as cache:
        assert isinstance(cache.images, np.memmap)
        assert np.array_equal(plain["images"], load_all_images(cache))
        assert np.array_equal(plain["sizes"], cache.sizes)
        assert np.array_equal(plain["splits/random_1/test"], cache.split("random_1")["test"])
        assert plain["names"].tolist() == cache.names
        assert "attrs" in plain.files


def test_cache_pickles_by_path(folder, tmp_path):
    out = tmp_path / "p.h5"
    _build(folder, out, resize="8x8", splits=1)
    with open_cache(out) as cache:
        clone = pickle.loads(pickle.dumps(cache))
        try:
            assert np.array_equal(clone.read_images([1, 2]), cache.read_images([1, 2]))
        finally:
            clone.close()
        before = cache.read_images([0, 5])
        cache.reopen()
        assert np.array_equal(cache.read_images([0, 5]), before) and cache.attrs["dataset"] == "mine"


# --- atomicity -----------------------------------------------------------------------------------------


class _InterruptAfter:
    """A progress object that presses Ctrl-C after `n` decoded images."""

    def __init__(self, n: int) -> None:
        self.n, self.phase = n, ""

    def start(self, description, total):
        self.phase, self.done = description, 0

    def advance(self, n=1):
        self.done += n
        if self.phase.startswith("decoding") and self.done >= self.n:
            raise KeyboardInterrupt

    def log(self, message):
        pass

    def finish(self):
        pass


@pytest.mark.parametrize(("fmt", "workers"), [("h5", 2), ("npz", 1)])
def test_interrupted_write_leaves_no_file(folder, tmp_path, fmt, workers):
    out_dir = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        _build(folder, out_dir / f"mine.{fmt}", resize="none", progress=_InterruptAfter(3), workers=workers)
    assert _leftovers(out_dir) == []


def test_failed_rebuild_keeps_the_previous_cache(folder, tmp_path, monkeypatch):
    out = tmp_path / "keep.h5"
    _build(folder, out, resize="8x8", splits=1)
    before = out.read_bytes()
    calls = {"n": 0}
    original = cache_write._H5Sink.put

    def failing_put(self, slot, image):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("No space left on device")
        return original(self, slot, image)

    monkeypatch.setattr(cache_write._H5Sink, "put", failing_put)
    with pytest.raises(OSError, match="No space"):
        _build(folder, out, resize="16x16", splits=1)
    assert out.read_bytes() == before and _leftovers(tmp_path) == ["data", "keep.h5"]


# --- bad input -------------------------------------------------------------------------------------------


def test_missing_image_is_an_error_naming_it_or_skipped(folder, tmp_path):
    (folder[0] / "sub" / "c.bmp").unlink()
    with pytest.raises(DataError, match=r"sub/c\.bmp.*--skip-bad"):
        _build(folder, tmp_path / "x.h5")
    os.mkfifo(folder[0] / "sub" / "c.bmp")  # there, but a pipe: not "missing", and never opened
    with pytest.raises(DataError, match=r"sub/c\.bmp: image listed in .* is not a regular file \(a pipe"):
        _build(folder, tmp_path / "x.h5")
    summary = _build(folder, tmp_path / "x.h5", skip_bad=True, splits=1)
    assert summary.count == 5 and [n for n, _ in summary.skipped] == ["sub/c.bmp"]
    with open_cache(tmp_path / "x.h5") as cache:
        assert cache.attrs["skipped"] == 1 and cache.attrs["skipped_names"] == ["sub/c.bmp"]
        assert "sub/c.bmp" not in cache.names and len(cache) == 5


@pytest.mark.parametrize("fmt", ["h5", "npz"])
def test_truncated_images_are_errors_or_skipped(folder, tmp_path, fmt):
    truncate(folder[0] / "a.jpg", 0.5)
    truncate(folder[0] / "e.jpeg", 0.6)
    (folder[0] / "D.PNG").write_bytes(b"this is not a PNG")
    out = tmp_path / f"bad.{fmt}"
    with pytest.raises(DataError) as info:
        _build(folder, out, resize="none")
    assert "D.PNG" in str(info.value) and "\n" not in str(info.value)  # header pass fails first
    (folder[0] / "D.PNG").unlink()
    save(folder[0] / "D.PNG", smooth_image(30, 30, seed=3))
    with pytest.raises(DataError, match=r"a\.jpg: image data is truncated"):
        _build(folder, out, resize="none")
    assert _leftovers(tmp_path) == ["data"]
    (folder[0] / "D.PNG").write_bytes(b"")
    summary = _build(folder, out, resize="none", skip_bad=True, splits=1)
    assert sorted(n for n, _ in summary.skipped) == ["D.PNG", "a.jpg", "e.jpeg"]
    with open_cache(out) as cache:
        assert cache.names == ["b.png", "sub/c.bmp", "sub/f.png"]
        assert cache.attrs["skipped"] == 3 and cache.shape == (3, 48, 40, 3)  # the canvas shrank to the kept images
        for index, name in enumerate(cache.names):
            assert np.array_equal(cache.image(index), decode_image(folder[0] / name))
            assert int(cache.file_digests[index]) == file_digest(folder[0] / name)  # aligned past the skips
        assert cache.scores.tolist() == [20.0, 35.5, 90.0]


def test_nothing_left_to_pack(tmp_path):
    root = tmp_path / "d"
    csv_path = make_folder(root, MIXED[:2])
    for item in MIXED[:2]:
        truncate(root / item.name, 0.3)
    spec = make_spec("x", csv_path, root=root)
    with pytest.raises(DataError, match="no readable images"):
        build_cache(spec, root, tmp_path / "x.h5", CacheOptions(workers=1, skip_bad=True, splits=0))
    assert not (tmp_path / "x.h5").exists()


# --- the reader refuses what is not a cache --------------------------------------------------------------


def test_open_refuses_empty_truncated_and_foreign_files(folder, tmp_path):
    good = tmp_path / "good.h5"
    _build(folder, good, resize="8x8", splits=1)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    foreign_h5 = tmp_path / "foreign.h5"
    with h5py.File(foreign_h5, "w") as f:
        f["x"] = np.zeros(3)
    foreign_npz = tmp_path / "foreign.npz"
    np.savez(foreign_npz, images=np.zeros((2, 4, 4, 3), np.uint8))
    text = tmp_path / "notes.h5"
    text.write_text("hello", encoding="utf-8")
    good_npz = tmp_path / "good.npz"
    _build(folder, good_npz, resize="8x8", splits=1)
    cut_npz = tmp_path / "cut.npz"
    cut_npz.write_bytes(good_npz.read_bytes()[:-200])
    for path in (cut, empty, foreign_h5, foreign_npz, text, cut_npz, tmp_path / "absent.h5"):
        with pytest.raises(DataError) as info:
            open_cache(path)
        message = str(info.value)
        assert str(path) in message and "\n" not in message, message


def test_atomic_files_get_the_umask_permissions(tmp_path):
    import os
    import stat

    from iqa_cli.atomic import atomic_path

    previous = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"done")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == 0o644
