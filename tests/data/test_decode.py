"""Decoding: headers, EXIF orientation, draft reduction, colour modes, failures, the worker pool."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from PIL import Image, ImageOps

from iqa_cli.data import decode
from iqa_cli.data.decode import (
    DecodeFailure,
    DecodeJob,
    ImageHeader,
    content_notes,
    decode_image,
    decode_images,
    decode_job,
    read_header,
    read_headers,
    worker_pool,
)
from iqa_cli.errors import DataError
from tests.data.imagefolder import save, smooth_image, truncate


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_headers_of_common_formats(tmp_path):
    array = smooth_image(40, 30, seed=1)
    for ext in ("jpg", "png", "bmp"):
        header = read_header(save(tmp_path / f"x.{ext}", array))
        assert header == ImageHeader(40, 30, 1, {"jpg": "JPEG", "png": "PNG", "bmp": "BMP"}[ext])


def test_headers_count_frames_and_transparency_and_the_notes_name_them(tmp_path):
    """A multi-page TIFF, an animated WebP and a transparent PNG were read as their first frame and their
    stored colours without a word."""
    rgb = smooth_image(40, 30, seed=2)
    pages = [Image.fromarray(smooth_image(40, 30, seed=k)) for k in range(3)]
    pages[0].save(tmp_path / "pages.tif", save_all=True, append_images=pages[1:])
    pages[0].save(tmp_path / "moving.webp", save_all=True, append_images=pages[1:], lossless=True)
    alpha = np.full((30, 40), 255, np.uint8)
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "opaque.png")  # an alpha band, nothing see-through
    alpha[:5, :5] = 0
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "cutout.png")
    palette = Image.fromarray(rgb).convert("P")
    palette.save(tmp_path / "palette.png", transparency=palette.getpixel((0, 0)))  # that colour see-through
    mpo = read_header(save(tmp_path / "photo.jpg", rgb))  # one frame; an MPO's extra pictures are no frames
    headers = {p.name: read_header(p) for p in sorted(tmp_path.iterdir())}
    assert {name: (h.frames, h.transparent) for name, h in headers.items()} == {
        "cutout.png": (1, True),
        "moving.webp": (3, False),
        "opaque.png": (1, False),
        "pages.tif": (3, False),
        "palette.png": (1, True),
        "photo.jpg": (1, False),
    }
    assert (mpo.frames, mpo.transparent) == (1, False)
    notes = content_notes(list(headers.items()))
    assert notes[0].startswith("2 image(s) hold several frames") and "e.g. moving.webp: 3" in notes[0]
    assert "only the first frame is read" in notes[0]
    assert "2 image(s) have transparent pixels (e.g. cutout.png): their alpha is dropped" in notes[1]
    assert content_notes([("photo.jpg", mpo)]) == []


def test_exif_orientation_is_applied_and_swaps_the_header_size(tmp_path):
    path = save(tmp_path / "rot.jpg", smooth_image(60, 40, seed=2), quality=95, exif=_exif(6))
    assert read_header(path) == ImageHeader(40, 60, 6, "JPEG")
    stored = decode_image(path, orientation=1)  # as stored, 40 high x 60 wide
    shown = decode_image(path)
    assert stored.shape == (40, 60, 3) and shown.shape == (60, 40, 3)
    assert np.array_equal(shown, np.rot90(stored, k=-1))  # orientation 6: rotate 90 degrees clockwise
    with Image.open(path) as im:
        assert np.array_equal(shown, np.asarray(ImageOps.exif_transpose(im).convert("RGB")))


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 7, 8])
def test_every_orientation_matches_pillow(tmp_path, orientation):
    path = save(tmp_path / "o.png", smooth_image(12, 8, seed=orientation), exif=_exif(orientation))
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert np.array_equal(decode_image(path), expected)
    header = read_header(path)
    assert (header.height, header.width) == expected.shape[:2]


def test_draft_reduction_is_used_and_matches_a_full_decode(tmp_path):
    path = save(tmp_path / "big.jpg", smooth_image(1600, 1200, seed=3), quality=92)
    with Image.open(path) as im:
        decode._open_reduced(im, (200, 150), 1)
        assert im.size == (200, 150)  # DCT-reduced 1/8: exactly the final size, no smaller
    reduced = decode_image(path, (200, 150)).astype(np.int16)
    full = decode_image(path, (200, 150), draft=False).astype(np.int16)
    assert reduced.shape == full.shape == (150, 200, 3)
    diff = np.abs(reduced - full)
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4


def test_draft_respects_orientation(tmp_path):
    path = save(tmp_path / "portrait.jpg", smooth_image(1600, 1200, seed=4), quality=92, exif=_exif(8))
    with Image.open(path) as im:
        decode._open_reduced(im, (150, 200), 8)  # final is portrait; the stored frame is landscape
        assert im.size == (200, 150)
    reduced = decode_image(path, (150, 200)).astype(np.int16)
    full = decode_image(path, (150, 200), draft=False).astype(np.int16)
    assert reduced.shape == (200, 150, 3) and np.abs(reduced - full).mean() < 1.0


def test_no_draft_when_keeping_the_size(tmp_path):
    path = save(tmp_path / "keep.jpg", smooth_image(64, 48, seed=5), quality=95)
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB"))
    assert np.array_equal(decode_image(path), expected)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16"])
def test_colour_modes_become_rgb(tmp_path, mode):
    rgb = smooth_image(20, 10, seed=6)
    if mode == "I;16":
        grey16 = (rgb[..., 0].astype(np.uint16) * 257).astype(np.uint16)
        image = Image.fromarray(grey16)
        assert image.mode.startswith("I")
        expected = np.repeat(rgb[..., :1], 3, axis=2)
    else:
        image = Image.fromarray(rgb).convert(mode)
        expected = np.asarray(image.convert("RGB"))
    path = tmp_path / f"m.{'jpg' if mode == 'CMYK' else 'png'}"
    image.save(path, **({"quality": 100} if mode == "CMYK" else {}))
    out = decode_image(path)
    assert out.dtype == np.uint8 and out.shape == (10, 20, 3)
    tolerance = 3 if mode == "CMYK" else 0
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= tolerance


def test_32_bit_images_are_grey_levels_only_when_their_values_are(tmp_path):
    """A 32-bit TIFF holding 0-255 grey levels decodes as those; floats in [0, 1] or 16-bit data in a
    32-bit container are refused by name instead of clipped into a black or white image."""
    grey = smooth_image(20, 10, seed=9)[..., 0]
    Image.fromarray(grey.astype(np.float32)).save(tmp_path / "levels.tif")
    assert np.array_equal(decode_image(tmp_path / "levels.tif"), np.repeat(grey[..., None], 3, axis=2))
    Image.fromarray(grey.astype(np.int32)).save(tmp_path / "levels_i.tif")
    assert np.array_equal(decode_image(tmp_path / "levels_i.tif"), np.repeat(grey[..., None], 3, axis=2))
    Image.fromarray((grey / 255).astype(np.float32)).save(tmp_path / "unit.tif")
    Image.fromarray(grey.astype(np.int32) * 200).save(tmp_path / "wide.tif")
    for name, kind in (("unit.tif", "float"), ("wide.tif", "integer")):
        failure = decode_job(DecodeJob(str(tmp_path / name)))
        assert isinstance(failure, DecodeFailure), name
        assert failure.message.startswith(f"a 32-bit {kind} image with values") and "ambiguous" in failure.message


def test_failures_are_values_naming_the_file(tmp_path):
    good = save(tmp_path / "good.jpg", smooth_image(64, 64, seed=7), quality=90)
    cut = truncate(save(tmp_path / "cut.jpg", smooth_image(64, 64, seed=8), quality=90), 0.6)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image", encoding="utf-8")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert isinstance(read_header(cut), ImageHeader)  # the header survives; the pixels do not
    failure = decode_job(DecodeJob(str(cut)))
    assert isinstance(failure, DecodeFailure) and "truncated" in failure.message
    error = failure.error()
    assert isinstance(error, DataError) and str(cut) in str(error) and "--skip-bad" in str(error)
    for bad in (text, empty, tmp_path / "absent.jpg"):
        header = read_header(bad)
        assert isinstance(header, DecodeFailure) and header.path == str(bad)
    assert isinstance(decode_job(DecodeJob(str(good))), np.ndarray)


def test_pool_results_are_in_order_and_equal_in_process(tmp_path):
    paths = [save(tmp_path / f"{i}.png", smooth_image(16 + i, 12, seed=i)) for i in range(9)]
    truncate(paths[4], 0.5)
    jobs = [DecodeJob(str(p), 1, (8, 6) if i % 2 else None) for i, p in enumerate(paths)]
    serial = list(decode_images(jobs))
    with worker_pool(2) as workers:
        assert workers.count == 2
        parallel = list(decode_images(jobs, workers=workers, image_bytes=1, inflight_bytes=1))
        headers = list(read_headers(paths, workers=workers))
    assert isinstance(serial[4], DecodeFailure) and isinstance(parallel[4], DecodeFailure)
    for i, (a, b) in enumerate(zip(serial, parallel, strict=True)):
        if i != 4:
            assert np.array_equal(a, b)
            assert a.shape == ((6, 8, 3) if i % 2 else (12, 16 + i, 3))
    assert [h.width for h in headers] == [16 + i for i in range(9)]


class _FakePool:
    """Counts the tasks in flight to check the sliding window's bound."""

    def __init__(self) -> None:
        self.pending = 0
        self.most = 0

    def apply_async(self, func, args):
        self.pending += 1
        self.most = max(self.most, self.pending)
        pool = self

        class _Result:
            def get(self):
                pool.pending -= 1
                return func(*args)

        return _Result()


def test_the_window_bounds_the_work_in_flight():
    pool = _FakePool()
    chunks = ([i] for i in range(100))
    results = list(decode._ordered(pool, lambda chunk: [x * 2 for x in chunk], chunks, window=3))
    assert results == [2 * i for i in range(100)]
    assert pool.most == 3


def test_in_process_when_one_worker():
    with worker_pool(1) as workers:
        assert workers.pool is None and workers.count == 1


def _nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.timeout(60)
def test_terminated_workers_die_even_under_a_raising_sigterm_handler():
    """`iqa` raises on SIGTERM in its main process; forked workers must not inherit that, and an
    interrupted pool is torn down at once, its busy workers killed."""

    def raising(signum, frame):
        raise RuntimeError("SIGTERM handler ran in a worker")

    previous = signal.signal(signal.SIGTERM, raising)
    try:
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt), worker_pool(2) as workers:
            pending = [workers.pool.apply_async(_nap, (30.0,)) for _ in range(2)]
            time.sleep(0.5)  # both workers are inside a task
            raise KeyboardInterrupt
        assert time.monotonic() - started < 10 and not any(p.ready() for p in pending)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_cli_restores_the_callers_sigterm_handler():
    from typer.testing import CliRunner

    from iqa_cli.cli.main import app

    before = signal.getsignal(signal.SIGTERM)
    assert CliRunner().invoke(app, ["prepare", "list"]).exit_code == 0
    assert signal.getsignal(signal.SIGTERM) is before


def test_decoding_with_digests_gives_the_same_pixels_and_one_digest_per_distinct_file(tmp_path):
    """Byte-identical files (a copy, a link) share a digest; another file does not; a missing file is the
    same failure as without digests."""
    import os
    import shutil

    from iqa_cli.data.decode import decode_images_with_digests, file_digest

    first = save(tmp_path / "a.jpg", smooth_image(40, 30, seed=1))
    other = save(tmp_path / "b.png", smooth_image(40, 30, seed=2))
    shutil.copy(first, tmp_path / "copy.jpg")
    os.symlink(first, tmp_path / "link.jpg")
    names = ["a.jpg", "b.png", "copy.jpg", "link.jpg", "gone.jpg"]
    jobs = [DecodeJob(str(tmp_path / name), size=(20, 15)) for name in names]
    plain = list(decode_images(jobs))
    with worker_pool(2) as pool:
        digested = list(decode_images_with_digests(jobs, workers=pool))
    for without, (array, _digest) in zip(plain[:4], digested[:4], strict=True):
        assert np.array_equal(without, array)
    digests = [item[1] for item in digested[:4]]
    assert digests[0] == digests[2] == digests[3] == file_digest(first) != digests[1]
    assert digests[1] == file_digest(other)
    assert isinstance(digested[4], DecodeFailure) and digested[4].message == plain[4].message == "image file not found"


def test_a_file_replaced_between_its_digest_and_its_decode_is_a_failure(tmp_path, monkeypatch):
    """The digest is read from the file, then the pixels decoded from its path: a file a copy or an unzip
    was still writing in between gave one version's digest with the other's pixels, so copy detection
    (and `eval --drop-seen`) missed it. It is now a failure naming the file."""
    from iqa_cli.data.decode import decode_job_with_digest, file_digest

    path = save(tmp_path / "a.png", smooth_image(40, 30, seed=1))
    replacement = save(tmp_path / "b.png", smooth_image(40, 30, seed=2))

    def digest_then_replace(name):
        digest = file_digest(name)
        os.replace(replacement, path)  # the new version lands after the digest was taken
        return digest

    monkeypatch.setattr(decode, "file_digest", digest_then_replace)
    result = decode_job_with_digest(DecodeJob(str(path), size=(40, 30)))
    assert isinstance(result, DecodeFailure), "one version's digest was paired with another's pixels"
    assert result.path == str(path) and "changed while it was being read" in result.message
