"""`iqa prepare`: the per-dataset commands, custom, inspect and list, through the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from iqa_cli.cli import prepare as prepare_cli
from iqa_cli.cli.main import app
from iqa_cli.data.cache import open_cache
from iqa_cli.data.datasets import DATASETS
from tests.data.fixtures import make_livew
from tests.data.imagefolder import MIXED, make_folder, truncate
from tests.signals import lose_a_signal

runner = CliRunner()


def iqa(*args: str):
    return runner.invoke(app, ["prepare", *map(str, args)])


def failed(result, *fragments: str) -> bool:
    """A one-line `error:` on stderr naming what went wrong, and a non-zero exit code."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return result.exit_code != 0 and len(errors) == 1 and all(f in errors[0] for f in fragments)


def test_custom_to_the_default_path_with_json(tmp_path, _isolated_home):
    root = tmp_path / "photos"
    csv_path = make_folder(root)
    result = iqa("custom", "--root", root, "--csv", csv_path, "--name", "mine", "--size", "32x24", "-j", "1", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    expected = _isolated_home / "data" / "mine.h5"
    assert summary["path"] == str(expected) and expected.is_file()
    assert summary["count"] == 6 and summary["shape"] == [6, 24, 32, 3] and summary["format"] == "h5"
    assert summary["resize"] == "32x24" and summary["skipped"] == [] and len(summary["splits"]) == 10
    assert summary["bytes"] == expected.stat().st_size and summary["images_per_second"] > 0
    with open_cache(expected) as cache:
        assert cache.attrs["dataset"] == "mine" and cache.names == [i.name for i in MIXED]


def test_custom_text_summary_npz_and_options(tmp_path):
    root = tmp_path / "photos"
    make_folder(root, header=False)  # the only CSV in the root is found by itself
    out = tmp_path / "caches" / "mine.npz"
    result = iqa(
        "custom", "--root", root, "--name", "mine", "--out", out, "--short-side", "12", "--workers", "2",
        "--splits", "3", "--split-seed", "5", "--test-fraction", "0.5", "--lower-better", "--range", "0,100",
        "--score-type", "DMOS",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("wrote 6 images") and str(out) in line and "images/s" in line and "resize short:12" in line
    with open_cache(out) as cache:
        assert cache.format == "npz" and cache.attrs["lower_better"] is True
        assert cache.attrs["native_range"] == [0.0, 100.0] and cache.attrs["score_type"] == "DMOS"
        assert cache.split_names() == ["random_0", "random_1", "random_2"] and cache.attrs["split_seed"] == 5
        assert cache.split("0")["test"].size == 3


def test_custom_images_read_in_part_are_said_so(tmp_path):
    """A custom set's multi-page TIFF and transparent PNG were stored as their first page and the colours
    under their alpha without a word."""
    from PIL import Image

    from tests.data.imagefolder import smooth_image

    root = tmp_path / "photos"
    csv_path = make_folder(root)
    pages = [Image.fromarray(smooth_image(40, 30, seed=k)) for k in range(3)]
    pages[0].save(root / "pages.tif", save_all=True, append_images=pages[1:])
    rgba = np.dstack([smooth_image(40, 30, seed=4), np.full((30, 40), 255, np.uint8)])
    rgba[:4, :4, 3] = 0
    Image.fromarray(rgba).save(root / "cutout.png")
    csv_path.write_text(csv_path.read_text(encoding="utf-8") + "pages.tif,55.0,\ncutout.png,60.0,\n", encoding="utf-8")
    result = iqa("custom", "--root", root, "--csv", csv_path, "--out", tmp_path / "m.h5", "-j", "1")
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "1 image(s) hold several frames (a multi-page TIFF, an animated image; e.g. pages.tif: 3)" in said
    assert "1 image(s) have transparent pixels (e.g. cutout.png): their alpha is dropped" in said


def test_inspect_by_name_and_path(tmp_path):
    root = tmp_path / "photos"
    make_folder(root)
    assert iqa("custom", "--root", root, "--name", "mine", "-j", "1", "--splits", "2").exit_code == 0
    result = iqa("inspect", "mine", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["count"] == 6 and info["images"]["shape"] == [6, 48, 64, 3] and info["images"]["padded"]
    assert info["images"]["dtype"] == "uint8" and info["std_available"] == 4
    assert info["scores"]["min"] == 10.0 and info["scores"]["max"] == 90.0
    assert info["scores"]["mean"] == pytest.approx(np.mean([i.score for i in MIXED]))
    assert info["resize"] == "none" and info["skipped"] == 0
    assert info["splits"] == {"random_0": {"train": 4, "test": 2}, "random_1": {"train": 4, "test": 2}}
    assert info["attrs"]["format_version"] == 1
    text = iqa("inspect", info["path"])
    assert text.exit_code == 0, text.output
    for fragment in ("6 x 48x64x3 uint8", "zero-padded", "random_1", "train 4, test 2", "4 of 6 images", "skipped"):
        assert fragment in text.stdout, fragment


def test_inspect_shows_a_cache_with_an_infinite_score(tmp_path):
    """A cache written before scores were range-checked can hold inf: inspect crashed formatting its mean."""
    import h5py

    root = tmp_path / "photos"
    make_folder(root)
    out = tmp_path / "m.h5"
    assert iqa("custom", "--root", root, "--out", out, "-j", "1", "--splits", "2").exit_code == 0
    with h5py.File(out, "r+") as f:
        f["scores"][1] = np.inf
    text = iqa("inspect", out)
    assert text.exit_code == 0, text.output
    assert "1 of 6 not finite (training refuses this cache)" in " ".join(text.stdout.split())
    info = json.loads(iqa("inspect", out, "--json").stdout)
    assert info["scores"]["not_finite"] == 1 and info["scores"]["max"] is None


def test_list_shows_every_registered_dataset():
    result = iqa("list", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(DATASETS) and {"custom", "livew"} <= set(rows)
    assert rows["custom"]["native_range"] is None
    for name, spec in DATASETS.items():
        assert rows[name]["default_resize"] == spec.default_resize and rows[name]["expects"] == list(spec.expects)
    text = iqa("list")
    assert text.exit_code == 0 and all(name in text.stdout for name in DATASETS)


def test_help_lists_a_command_per_dataset():
    # Through the `prepare` group itself; see the report: the root app's --help handling is the lead's.
    result = runner.invoke(prepare_cli.app, ["--help"])
    assert result.exit_code == 0, result.output
    for name in [*DATASETS, "inspect", "list"]:
        assert name in result.stdout
    livew = runner.invoke(prepare_cli.app, ["livew", "--help"])
    assert livew.exit_code == 0 and "--root" in livew.stdout and "--skip-bad" in livew.stdout


def test_dataset_command_reports_missing_metadata(tmp_path):
    empty = tmp_path / "ChallengeDB_release"
    empty.mkdir()
    result = iqa("livew", "--root", empty, "-j", "1")
    assert failed(result, str(empty)), result.output
    alias = iqa("livec", "--root", empty, "-j", "1")  # aliases are hidden commands
    assert failed(alias, str(empty)), alias.output
    assert not list((tmp_path).glob("**/*.h5"))


def test_bad_images_fail_or_are_skipped(tmp_path):
    root = tmp_path / "photos"
    make_folder(root)
    truncate(root / "e.jpeg", 0.5)
    result = iqa("custom", "--root", root, "--name", "mine", "-j", "1")
    assert failed(result, "e.jpeg", "truncated"), result.output
    skipped = iqa("custom", "--root", root, "--name", "mine", "-j", "1", "--skip-bad", "--json")
    assert skipped.exit_code == 0, skipped.output
    summary = json.loads(skipped.stdout)
    assert summary["count"] == 5 and [s["name"] for s in summary["skipped"]] == ["e.jpeg"]
    assert "skipped 1 image" in skipped.stderr and "e.jpeg" in skipped.stderr
    info = json.loads(iqa("inspect", "mine", "--json").stdout)
    assert info["skipped"] == 1 and info["skipped_names"] == ["e.jpeg"]


def test_option_and_input_errors(tmp_path):
    root = tmp_path / "photos"
    csv_path = make_folder(root)
    base = ("custom", "--root", root, "-j", "1")
    assert failed(iqa(*base, "--csv", tmp_path / "nope.csv"), "nope.csv", "not found")
    assert failed(iqa(*base, "--size", "10x10", "--short-side", "5"), "mutually exclusive")
    assert failed(iqa(*base, "--size", "tiny"), "invalid size")
    assert failed(iqa(*base, "--format", "npz", "--out", tmp_path / "x.h5"), "does not match")
    # `--out abc` wrote an HDF5 cache named abc, which `--data abc` did not find by name
    assert failed(iqa(*base, "--out", tmp_path / "abc"), "--out", "abc: a cache file's name ends in .h5, .hdf5 or .npz")
    assert not (tmp_path / "abc").exists()
    assert failed(iqa(*base, "--name", "livew"), "built-in dataset")
    (tmp_path / "a_file").write_text("", encoding="utf-8")
    assert failed(iqa(*base, "--csv", csv_path, "--out", tmp_path / "a_file" / "x.h5"), "--out:", "is a file, so")
    assert failed(iqa(*base, "--range", "high"), "--range")
    csv_path.write_text("name,score\na.jpg,good\n", encoding="utf-8")
    assert failed(iqa(*base), "scores.csv", "line 2", "malformed score")
    csv_path.write_text("name,score\nmissing.jpg,3\n", encoding="utf-8")
    assert failed(iqa(*base), "missing.jpg")
    assert failed(iqa("inspect", "nothing-here"), "nothing-here")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"")
    assert failed(iqa("inspect", junk), str(junk), "empty")


def test_split_options_beyond_what_can_be_drawn_are_refused_before_the_work(tmp_path, _isolated_home):
    """`--splits 99999999999` hung drawing splits; `--split-seed 4294967295 --splits 2` was a raw ValueError."""
    root = tmp_path / "photos"
    make_folder(root)
    base = ("custom", "--root", root, "-j", "1", "--name", "mine")
    assert failed(iqa(*base, "--splits", "99999999999"), "--splits")
    assert failed(
        iqa(*base, "--split-seed", "4294967295", "--splits", "2"), "--split-seed: must be between 0 and 4294967294"
    )
    assert not (_isolated_home / "data" / "mine.h5").exists()
    assert failed(iqa("distorted", "--refs", root, "--splits", "-1"), "--splits")


def test_a_cache_that_cannot_fit_on_its_disk_is_refused_before_decoding(tmp_path, monkeypatch, _isolated_home):
    """`--size 20000x20000` on 60 small images decoded for minutes toward a 72 GB cache on a disk with 74 GB
    free: the space its pixels need is now checked against the disk before any image is decoded."""
    import shutil
    from collections import namedtuple

    root = tmp_path / "photos"
    make_folder(root)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 10_000, 10_000))
    result = iqa("custom", "--root", root, "-j", "1", "--name", "mine", "--size", "640x480")
    assert result.exit_code == 74 and failed(result, "mine.h5", "the cache needs at least", "GiB free"), result.output
    assert "decoding images" not in result.output and not (_isolated_home / "data" / "mine.h5").exists()


def test_enhancement_settings_without_an_enhancement_are_refused(tmp_path, _isolated_home):
    """--classifier and --no-selection were silently ignored without --enhance (and --classifier with
    --no-selection): a user who asked for them got a cache made without what they asked."""
    root = tmp_path / "photos"
    make_folder(root)
    base = ("custom", "--root", root, "-j", "1", "--name", "mine")
    assert failed(iqa(*base, "--classifier", "my_vit"), "--classifier:", "--enhance or --enhanced-root")
    assert failed(iqa(*base, "--no-selection"), "--selection/--no-selection:", "--enhance")
    assert failed(
        iqa(*base, "--enhance", "--no-selection", "--classifier", "my_vit"), "--classifier:", "--no-selection"
    )
    assert not (_isolated_home / "data" / "mine.h5").exists()
    assert failed(iqa("enhance", "mine", "--no-selection", "--classifier", "my_vit"), "--classifier:")
    assert failed(iqa("enhance", "mine", "--from-authors", tmp_path / "x.mat", "--device", "cpu"), "--device:")
    assert iqa(*base).exit_code == 0  # the defaults, untouched, are no request


def test_a_single_image_needs_splits_zero(tmp_path, _isolated_home):
    root = tmp_path / "one"
    make_folder(root, MIXED[:1])
    result = iqa("custom", "--root", root, "--name", "one", "-j", "1")
    assert failed(result, "--splits 0"), result.output
    assert not (_isolated_home / "data" / "one.h5").exists()
    result = iqa("custom", "--root", root, "--name", "one", "-j", "1", "--splits", "0", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["splits"] == {}
    assert json.loads(iqa("inspect", "one", "--json").stdout)["splits"] == {}


@pytest.mark.parametrize("separator", ["\t", ";"])
def test_a_tab_or_semicolon_separated_file_is_read_as_its_csv(tmp_path, separator):
    """A TSV (or a spreadsheet's ;-export) was refused: "line 1 has 1 column(s)"."""
    root = tmp_path / "photos"
    csv_path = make_folder(root)
    assert iqa("custom", "--root", root, "--csv", csv_path, "--out", tmp_path / "c.h5", "-j", "1").exit_code == 0
    other = tmp_path / "labels.txt"
    other.write_text(csv_path.read_text(encoding="utf-8").replace(",", separator), encoding="utf-8")
    result = iqa("custom", "--root", root, "--csv", other, "--out", tmp_path / "t.h5", "-j", "1")
    assert result.exit_code == 0, result.output
    with open_cache(tmp_path / "c.h5") as comma, open_cache(tmp_path / "t.h5") as read:
        assert read.names == comma.names and np.array_equal(read.scores, comma.scores)
        assert np.array_equal(read.std, comma.std, equal_nan=True) and np.isfinite(read.std).any()
    if separator == ";":  # a decimal comma stays inside its cell: refused as a score, never read as 3
        lines = other.read_text(encoding="utf-8").splitlines()
        other.write_text(
            "\n".join([lines[0], lines[1].rsplit(";", 2)[0] + ";3,75;0,5", *lines[2:]]) + "\n", encoding="utf-8"
        )
        result = iqa("custom", "--root", root, "--csv", other, "--out", tmp_path / "d.h5", "-j", "1")
        assert failed(result, str(other), "line 2", "3,75"), result.output


def test_a_malformed_score_on_the_first_row_is_an_error_not_a_header(tmp_path):
    root = tmp_path / "photos"
    csv_path = make_folder(root, header=False)
    rows = csv_path.read_text(encoding="utf-8").splitlines()
    first = rows[0].split(",")
    rows[0] = ",".join([first[0], "bad", *first[2:]])
    csv_path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = iqa("custom", "--root", root, "--name", "mine", "-j", "1")
    assert failed(result, str(csv_path), "line 1"), result.output


def test_caches_are_found_by_alias_and_an_ambiguous_name_is_refused(tmp_path, _isolated_home):
    make_livew(tmp_path / "download")
    assert iqa("livec", "--root", tmp_path / "download", "-j", "1").exit_code == 0  # writes livew.h5
    by_alias = iqa("inspect", "livec", "--json")
    assert by_alias.exit_code == 0, by_alias.output
    assert json.loads(by_alias.stdout)["attrs"]["dataset"] == "livew"
    assert iqa("livew", "--root", tmp_path / "download", "--format", "npz", "-j", "1").exit_code == 0
    assert failed(iqa("inspect", "livew"), "more than one cache", "livew.h5", "livew.npz")


def test_roots_are_recorded_absolute_and_point_at_the_images(tmp_path, monkeypatch, _isolated_home):
    make_livew(tmp_path / "download")  # the official doubled folder: the images are two levels below --root
    monkeypatch.chdir(tmp_path)
    assert iqa("livew", "--root", "download", "-j", "1").exit_code == 0
    with open_cache(_isolated_home / "data" / "livew.h5") as cache:
        assert cache.attrs["source_root"] == str((tmp_path / "download").resolve())
        dataset_root = Path(cache.attrs["dataset_root"])
        assert dataset_root != tmp_path / "download" and dataset_root.is_relative_to(tmp_path / "download")
        assert all((dataset_root / name).is_file() for name in cache.names)


def test_sigterm_while_packing_leaves_no_partial_file(tmp_path, _isolated_home):
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    from tests.data.imagefolder import save, smooth_image

    # Large PNGs (no decode-time reduction) make a write phase of several seconds to interrupt.
    root = tmp_path / "photos"
    first = save(root / "im000.png", smooth_image(1600, 1200, 0))
    lines = ["name,score", "im000.png,1"]
    for i in range(1, 150):
        shutil.copyfile(first, root / f"im{i:03d}.png")
        lines.append(f"im{i:03d}.png,{i}")
    (root / "scores.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "caches" / "big.h5"
    command = [sys.executable, "-m", "iqa_cli", "prepare", "custom", "--root", str(root), "--out", str(out)]
    command += ["--name", "big", "--workers", "1", "--size", "200x150"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.parent.glob(".big.h5.*.partial")):
        time.sleep(0.05)  # wait until the temporary cache exists, i.e. images are being written
    assert list(out.parent.glob(".big.h5.*.partial")), "the cache was never started"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "SIGTERM" in errors[0] and "Traceback" not in stderr
    assert not out.exists() and os.listdir(out.parent) == []


def _prepare_small_folder(tmp_path: Path):
    """`iqa prepare custom` of the MIXED folder (written once) into caches/mine.h5: (cache path, result)."""
    root = tmp_path / "photos"
    if not root.exists():
        make_folder(root)
    out = tmp_path / "caches" / "mine.h5"
    return out, iqa("custom", "--root", root, "--name", "mine", "--out", out, "--size", "32x24", "-j", "1")


@pytest.mark.parametrize(
    ("signal_name", "code", "said"), [("SIGTERM", 143, "terminated (SIGTERM)"), ("SIGINT", 130, "interrupted")]
)
def test_a_signal_whose_exception_was_lost_still_stops_before_the_cache_is_committed(
    tmp_path, monkeypatch, signal_name, code, said
):
    """CI once saw `prepare` finish with exit 0 after a SIGTERM: its exception can be lost where a library
    discards errors. The request is remembered (Ctrl-C's too), so the cache is never committed and the
    exit is the signal's."""

    from iqa_cli.data import cache_write

    original = cache_write._stream_images

    def swallowing(*args, **kwargs):
        failed = original(*args, **kwargs)
        lose_a_signal(signal_name)
        return failed

    monkeypatch.setattr(cache_write, "_stream_images", swallowing)
    out, result = _prepare_small_folder(tmp_path)
    assert result.exit_code == code and failed(result, said), result.output
    assert not out.exists() and [p.name for p in out.parent.iterdir() if not p.name.endswith(".lock")] == []
    from iqa_cli.atomic import atomic_path

    with atomic_path(tmp_path / "after.txt") as tmp:  # the caller's own write after the command: not refused
        tmp.write_text("mine", encoding="utf-8")
    monkeypatch.setattr(cache_write, "_stream_images", original)
    assert _prepare_small_folder(tmp_path)[1].exit_code == 0


_DESTRUCTOR_RUN = """
import sys
from iqa_cli.cli.main import main
from iqa_cli.data import cache_write
from tests.signals import lose_a_signal_in_a_destructor

original = cache_write._stream_images
what = sys.argv[1]

class Broken:
    def __del__(self):
        raise ValueError("a destructor's own bug")

def patched(*args, **kwargs):
    failed = original(*args, **kwargs)
    if what == "bug":
        Broken()
    else:
        lose_a_signal_in_a_destructor(what)
    return failed

cache_write._stream_images = patched
sys.argv = ["iqa", *sys.argv[2:]]
main()
"""


def _prepare_with_a_destructor(tmp_path: Path, what: str):
    """`iqa prepare custom` as a standalone process (pytest's own hook would hide Python's report) whose
    work runs a destructor that loses `what` (a signal's name) or raises its own bug ("bug")."""
    import subprocess
    import sys

    root = tmp_path / "photos"
    make_folder(root)
    out = tmp_path / "caches" / "mine.h5"
    args = ["prepare", "custom", "--root", str(root), "--name", "mine", "--out", str(out), "--size", "32x24", "-j", "1"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", _DESTRUCTOR_RUN, what, *args]
    return out, subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    ("signal_name", "code", "said"), [("SIGTERM", 143, "terminated (SIGTERM)"), ("SIGINT", 130, "interrupted")]
)
def test_a_signal_lost_in_a_destructor_prints_its_one_line_and_no_traceback(tmp_path, signal_name, code, said):
    """CI: SIGTERM came while importlib ran a weak-reference callback; Python discarded the exception and
    printed "Exception ignored in ... Traceback" above the error line. The stop is remembered and honoured,
    so that report is noise: a traceback the user never asked for."""
    out, done = _prepare_with_a_destructor(tmp_path, signal_name)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == code and len(errors) == 1 and said in errors[0], done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
    assert not out.exists()


def test_an_error_in_a_destructor_that_is_not_a_signal_is_still_reported(tmp_path):
    out, done = _prepare_with_a_destructor(tmp_path, "bug")
    assert done.returncode == 0 and "ValueError: a destructor's own bug" in done.stderr, done.stderr
    assert out.exists()


@pytest.mark.parametrize(
    ("signal_name", "code", "said"), [("SIGTERM", 143, "terminated (SIGTERM)"), ("SIGINT", 130, "interrupted")]
)
def test_a_lost_signal_then_an_input_error_exits_with_the_signal_s_code(tmp_path, monkeypatch, signal_name, code, said):
    """CI: SIGTERM reached `prepare` while it decoded a folder of copies; the work went on to the end and the
    job exited 65 ("cannot split 1 distinct image file"), which a scheduler reads as bad input, not as the
    preemption it was."""
    from iqa_cli.data import cache_write

    original = cache_write._make_splits

    def after_a_lost_signal(*args, **kwargs):
        lose_a_signal(signal_name)
        return original(*args, **kwargs)  # every image is one file: a DataError of its own

    monkeypatch.setattr(cache_write, "_make_splits", after_a_lost_signal)
    root = tmp_path / "copies"
    make_folder(root, MIXED[:1])
    for i in range(1, 6):
        (root / f"copy{i}.jpg").write_bytes((root / MIXED[0].name).read_bytes())
    (root / "scores.csv").write_text(
        "name,score\n" + "".join(f"copy{i}.jpg,{i}\n" for i in range(1, 6)), encoding="utf-8"
    )
    out = tmp_path / "caches" / "copies.h5"
    result = iqa("custom", "--root", root, "--name", "copies", "--out", out, "-j", "1")
    assert result.exit_code == code and failed(result, said), result.output
    assert "cannot split" not in result.output and not out.exists()
    monkeypatch.setattr(cache_write, "_make_splits", original)
    assert failed(iqa("custom", "--root", root, "--name", "copies", "--out", out, "-j", "1"), "cannot split")


def test_a_lost_signal_stops_the_decoding_at_the_next_image(tmp_path, monkeypatch):
    """A signal's exception lost while decoding let the work go on through every image (6 s in CI) before a
    commit point noticed; the loop now stops at the next image."""
    from iqa_cli.data import cache_write

    original = cache_write.decode_images_with_digests
    handed_out = []

    def losing_a_signal_after_the_first(*args, **kwargs):
        for index, decoded in enumerate(original(*args, **kwargs)):
            handed_out.append(index)
            if index == 0:
                lose_a_signal("SIGTERM")
            yield decoded

    monkeypatch.setattr(cache_write, "decode_images_with_digests", losing_a_signal_after_the_first)
    out, result = _prepare_small_folder(tmp_path)
    assert result.exit_code == 143 and failed(result, "terminated (SIGTERM)"), result.output
    assert handed_out == [0] and len(MIXED) > 2 and not out.exists()  # not one image more


def test_inspect_lists_a_split_s_image_names_and_the_livew_training_images(tmp_path):
    """`iqa prepare inspect CACHE --split NAME [--json]`: the names each part holds, stored or computed."""
    expected = make_livew(tmp_path / "root")
    out = tmp_path / "livew.h5"
    assert iqa("livew", "--root", expected.root, "--out", out, "-j", "1", "--splits", "2").exit_code == 0
    info = json.loads(iqa("inspect", out, "--json").stdout)
    assert info["count"] == 17 and info["training_images"] == 7
    assert info["training_image_names"] == [f"Images/trainingImages/t{k}.bmp" for k in range(1, 8)]
    assert "7 flagged" in iqa("inspect", out).stdout
    with open_cache(out) as cache:
        for split in ("random_1", "authors_prep", "shuffle_4", "vtiqa_chain_1", "vipnet_3"):
            result = iqa("inspect", out, "--split", split, "--json")
            assert result.exit_code == 0, result.output
            members = json.loads(result.stdout)
            parts = cache.split(split)
            assert set(members) == {"train", "test"}
            assert members["test"] == [cache.names[i] for i in parts["test"]]
            assert members["train"] == [cache.names[i] for i in parts["train"]]
        random_names = set(json.loads(iqa("inspect", out, "--split", "1", "--json").stdout)["train"])
        assert not random_names & set(info["training_image_names"])
    text = iqa("inspect", out, "--split", "authors_prep")
    assert text.exit_code == 0 and "test\tImages/" in text.stdout
    assert failed(iqa("inspect", out, "--split", "random_9"), "no split 'random_9'")


def test_out_replaces_a_cache_never_another_program_s_file(tmp_path):
    """`--out ~/results.h5` replaced another program's HDF5 file (or a photo named .h5) with a cache."""
    import h5py

    root = tmp_path / "photos"
    csv_path = make_folder(root)
    theirs, photo, cache = tmp_path / "results.h5", tmp_path / "photo.h5", tmp_path / "mine.h5"
    with h5py.File(theirs, "w") as handle:
        handle["measurements"] = np.arange(5)
    photo.write_bytes((root / MIXED[0].name).read_bytes())  # a JPEG
    kept = {path: path.read_bytes() for path in (theirs, photo)}
    base = ("custom", "--root", root, "--csv", csv_path, "-j", "1", "--out")
    assert failed(iqa(*base, theirs), "--out:", "exists and is not an iqa cache (an HDF5 file without a cache's")
    assert failed(iqa(*base, photo), "exists and is not an iqa cache (a JPEG image)")
    assert all(path.read_bytes() == data for path, data in kept.items())
    assert iqa(*base, cache).exit_code == 0
    assert iqa(*base, cache).exit_code == 0  # a cache is replaced by a new one, as before
    truncate(cache)
    assert iqa(*base, cache).exit_code == 0  # so is a damaged one: re-preparing is the mend


def test_the_python_api_never_replaces_another_program_s_file_either(tmp_path):
    """The guard lives in the library (`build_cache`, `generate_distorted`, `merge_parts`), not only in the CLI."""
    import h5py

    import iqa_cli
    from iqa_cli.distort.generate import generate_distorted
    from iqa_cli.distort.merge import merge_parts
    from iqa_cli.errors import ConfigError

    root = tmp_path / "photos"
    make_folder(root)
    theirs = tmp_path / "results.h5"
    with h5py.File(theirs, "w") as handle:
        handle["measurements"] = np.arange(5)
    kept = theirs.read_bytes()
    for call in (
        lambda: iqa_cli.prepare("custom", root, out=theirs, workers=1),
        lambda: generate_distorted([root / MIXED[0].name], theirs),
        lambda: merge_parts([tmp_path / "part.h5"], theirs),
    ):
        with pytest.raises(ConfigError, match="exists and is not an iqa cache"):
            call()
    assert theirs.read_bytes() == kept


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_a_pipe_or_a_device_is_no_place_for_a_cache(tmp_path, suffix):
    """`--out` naming /dev/null (through a link named .h5/.npz) or a pipe: HDF5 failed after the work with
    an internal error (exit 1), and an NPZ said "wrote 48 images to null.npz (0 B)", exit 0, no cache."""
    import iqa_cli
    from iqa_cli.distort.generate import generate_distorted
    from iqa_cli.errors import ConfigError

    root = tmp_path / "photos"
    csv_path = make_folder(root)
    null = tmp_path / f"null{suffix}"
    null.symlink_to(os.devnull)
    result = iqa("custom", "--root", root, "--csv", csv_path, "-j", "1", "--out", null)
    assert failed(result, f"--out: {null} is a device; a cache is a regular file"), result.output
    assert "decoding" not in result.stderr  # before the work
    with pytest.raises(ConfigError, match="is a device; a cache is a regular file"):
        iqa_cli.prepare("custom", root, out=null, workers=1)
    if suffix == ".h5":
        with pytest.raises(ConfigError, match="is a device; a cache is a regular file"):
            generate_distorted([root / MIXED[0].name], null)
    assert null.is_symlink() and Path(os.devnull).is_char_device()
    # read as a cache: it was "cache file not found", of a file that is there
    assert failed(iqa("inspect", null), f"{null}: is a pipe, a device or a socket (expected a cache file")


@pytest.mark.parametrize("command", [["custom", "--root", "missing"], ["livew", "--root", "missing"]])
@pytest.mark.parametrize("fraction", ["0", "1", "1.5"])
def test_a_test_fraction_that_empties_a_part_is_refused_while_parsing(command, fraction):
    """`--test-fraction 0` or `1` was refused only after every image header had been read."""
    result = iqa(*command, "--test-fraction", fraction)
    assert result.exit_code == 2 and failed(result, "--test-fraction", "not a share strictly between 0 and 1")


def test_byte_identical_files_are_recorded_reported_and_kept_on_one_side_of_every_split(tmp_path, _isolated_home):
    """A file listed twice under two names (a copy, a symbolic link) would let a test image be one the model
    trained on: prepare says so, records each file's digest, and draws every random split with each set of
    copies on one side."""
    import os
    import shutil

    from iqa_cli.data.cache import open_cache
    from tests.train.caches import write_folder

    root = write_folder(tmp_path / "photos", n=30)
    names = sorted(p.name for p in root.glob("*.png"))
    shutil.copy(root / names[3], root / "copy.png")
    os.symlink(root / names[7], root / "link.png")
    with open(root / "scores.csv", "a", encoding="utf-8") as handle:
        handle.write("copy.png,2.5\nlink.png,3.5\n")
    out = tmp_path / "dup.h5"
    result = iqa("custom", "--root", root, "--name", "dup", "--out", out, "-j", "1", "--json", "--test-fraction", "0.3")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["identical_files"] == [[names[3], "copy.png"], [names[7], "link.png"]]
    assert f"2 image(s) are byte-identical copies of others ({names[3]} = copy.png; {names[7]} = link.png)" in (
        result.stderr
    )
    with open_cache(out) as cache:
        assert cache.file_digests is not None and cache.file_digests.dtype == np.uint64
        index = {name: i for i, name in enumerate(cache.names)}
        sides = set()
        for split in cache.split_names():
            test = cache.split(split)["test"]
            for pair in ((names[3], "copy.png"), (names[7], "link.png")):
                on_test = {bool(np.isin(index[n], test)) for n in pair}
                assert len(on_test) == 1, (split, pair)
                sides |= on_test
        assert sides == {True, False}  # the sets did move between the sides, together
    shown = runner.invoke(app, ["prepare", "inspect", str(out)])
    assert "identical files           2 copies in 2 sets" in shown.stdout
    assert f"{names[3]} = copy.png" in shown.stdout
    # nothing but copies of one file: no split can test an unseen image
    same = tmp_path / "same"
    same.mkdir()
    for k in range(5):
        shutil.copy(root / names[0], same / f"s{k}.png")
    (same / "scores.csv").write_text("".join(f"s{k}.png,{k + 1}\n" for k in range(5)), encoding="utf-8")
    refused = iqa("custom", "--root", same, "--name", "same", "--out", tmp_path / "same.h5", "-j", "1")
    assert failed(refused, "cannot split 1 distinct image file 80%/20%"), refused.output


def _rewrite_header(csv_path: Path, header: str, extra) -> None:
    """Replace the CSV's header with `header` and append `extra(name, score)` cells to each row."""
    rows = [line.split(",") for line in csv_path.read_text(encoding="utf-8").splitlines()[1:]]
    csv_path.write_text(
        "\n".join([header, *(",".join([r[0], *extra(r[0], float(r[1]))]) for r in rows)]) + "\n", encoding="utf-8"
    )


def test_a_header_naming_a_mos_and_a_dmos_column_is_refused_until_columns_picks_one(tmp_path, _isolated_home):
    """`name,mos,dmos` with --lower-better read the MOS column (first in a preference list) as the DMOS:
    every model trained on the cache learned quality upside down, and `inspect` said "DMOS"."""
    root = tmp_path / "photos"
    csv_path = make_folder(root)
    _rewrite_header(csv_path, "name,mos,dmos", lambda name, score: [f"{score}", f"{100 - score}"])
    result = iqa("custom", "--root", root, "--name", "mine", "--lower-better", "-j", "1")
    assert failed(result, str(csv_path), "2 score columns", "mos, dmos", "--columns"), result.output
    assert not (_isolated_home / "data" / "mine.h5").exists()
    undeclared = iqa("custom", "--root", root, "--name", "mine", "--columns", "name,DMOS", "-j", "1")
    assert failed(undeclared, "'dmos' names a DMOS", "--lower-better", "--higher-better"), undeclared.output
    result = iqa("custom", "--root", root, "--name", "mine", "--columns", "name,DMOS", "--lower-better", "-j", "1")
    assert result.exit_code == 0, result.output
    with open_cache(_isolated_home / "data" / "mine.h5") as cache:
        assert np.allclose(cache.scores, [100 - item.score for item in MIXED])
        assert cache.attrs["score_type"] == "DMOS" and bool(cache.attrs["lower_better"])


def test_a_score_direction_against_the_column_or_score_type_is_refused(tmp_path, _isolated_home):
    root = tmp_path / "photos"
    csv_path = make_folder(root)
    _rewrite_header(csv_path, "image,MOS", lambda name, score: [f"{score}"])
    assert failed(iqa("custom", "--root", root, "--lower-better", "-j", "1"), "'MOS'", "leave out --lower-better")
    for score_type, flags, said in (("DMOS", [], "declare its direction"), ("mos", ["--lower-better"], "rises")):
        result = iqa("custom", "--root", root, "--csv", csv_path, "--score-type", score_type, *flags, "-j", "1")
        assert failed(result, f"--score-type {score_type} names a", said), result.output
    result = iqa("custom", "--root", root, "--score-type", "level", "-j", "1")
    assert failed(result, "--score-type level", "iqa prepare distorted"), result.output
    assert not list((_isolated_home / "data").glob("*.h5"))
    csv_path.write_text(csv_path.read_text(encoding="utf-8").replace("image,MOS", "image,rating", 1), encoding="utf-8")
    result = iqa("custom", "--root", root, "--name", "rated", "--score-type", "grade", "--lower-better", "-j", "1")
    assert result.exit_code == 0, result.output  # a scale named otherwise declares its own direction
    make_folder(root, header=False)
    assert iqa("custom", "--root", root, "--name", "dmos", "--lower-better", "-j", "1").exit_code == 0
    with open_cache(_isolated_home / "data" / "dmos.h5") as cache:
        assert cache.attrs["score_type"] == "DMOS"  # --lower-better alone is a DMOS, not a "MOS, lower is better"
    # A 'dmos' column that rises with quality (KADID-10k's) is taken when declared so.
    make_folder(root)
    _rewrite_header(csv_path, "dist_img,dmos", lambda name, score: [f"{score}"])
    result = iqa("custom", "--root", root, "--name", "kadid_like", "--higher-better", "-j", "1")
    assert result.exit_code == 0, result.output
    with open_cache(_isolated_home / "data" / "kadid_like.h5") as cache:
        assert not bool(cache.attrs["lower_better"]) and np.allclose(cache.scores, [item.score for item in MIXED])


def test_a_score_column_that_does_not_say_its_direction_is_read_as_a_mos_with_a_warning(tmp_path, _isolated_home):
    """`name,score` is read as higher-is-better without a word: a DMOS exported under a plain name trained every
    model on it upside down, and its own test figures still looked right."""
    root = tmp_path / "photos"
    make_folder(root)  # name,score,std
    warned = "'score' does not say which way it runs: read as higher-is-better (a MOS); pass --lower-better"
    result = iqa("custom", "--root", root, "--name", "plain", "-j", "1")
    assert result.exit_code == 0 and warned in " ".join(result.output.split()), result.output
    # The range, when not declared, is the observed one: said too (the 1-5 labels are mapped from it).
    assert "note: no --range: the observed scores" in " ".join(result.output.split())
    ranged = iqa("custom", "--root", root, "--name", "ranged", "--range", "0,100", "--higher-better", "-j", "1")
    assert ranged.exit_code == 0 and "no --range" not in ranged.output, ranged.output
    for flags in (["--higher-better"], ["--lower-better"], ["--score-type", "MOS"]):
        said = iqa("custom", "--root", root, "--name", "said", *flags, "-j", "1")
        assert said.exit_code == 0 and "which way it runs" not in said.output, (flags, said.output)
    make_folder(root, header=False)
    result = iqa("custom", "--root", root, "--name", "bare", "-j", "1")
    assert "the score column does not say which way it runs" in " ".join(result.output.split()), result.output


def test_a_header_without_a_score_column_is_refused_not_read_by_position(tmp_path, _isolated_home):
    """`image,width,mos_raw`: the unrecognised score name made the columns positional, and the widths
    were stored as the scores."""
    root = tmp_path / "photos"
    csv_path = make_folder(root)
    _rewrite_header(csv_path, "image,width,mos_raw", lambda name, score: ["640", f"{score}"])
    result = iqa("custom", "--root", root, "--name", "mine", "-j", "1")
    assert failed(result, str(csv_path), "no score column", "--columns NAME,SCORE"), result.output
    missing = iqa("custom", "--root", root, "--name", "mine", "--columns", "image,mos", "-j", "1")
    assert failed(missing, "no column 'mos'", "image, width, mos_raw"), missing.output
    result = iqa("custom", "--root", root, "--name", "mine", "--columns", "image,mos_raw", "-j", "1")
    assert result.exit_code == 0, result.output
    with open_cache(_isolated_home / "data" / "mine.h5") as cache:
        assert np.allclose(cache.scores, [item.score for item in MIXED])
    make_folder(root, header=False)
    result = iqa("custom", "--root", root, "--name", "plain", "--columns", "name,score", "-j", "1")
    assert failed(result, "--columns", "line 1 is no header row"), result.output


def test_a_carriage_return_inside_a_line_is_named_in_the_files_terms(tmp_path):
    root = tmp_path / "photos"
    csv_path = make_folder(root)
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    lines[1] = lines[1].replace(",", "\r,", 1)
    csv_path.write_text("\n".join(lines) + "\n", newline="", encoding="utf-8")
    result = iqa("custom", "--root", root, "--out", tmp_path / "c.h5", "-j", "1")
    assert failed(result, str(csv_path), "carriage return"), result.output
    assert "universal-newline" not in result.stderr


def test_names_decomposed_on_disk_match_composed_names_in_the_csv(tmp_path, _isolated_home):
    """An archive made on macOS keeps `café.png` decomposed (NFD); a CSV typed elsewhere spells it composed
    (NFC). The file was reported "missing" beside its own name (and `--skip-bad` dropped it)."""
    import unicodedata

    root = tmp_path / "photos"
    csv_path = make_folder(root, MIXED[:3])
    names = ["café.png", "naïve.png", "plain.png"]
    for item, name in zip(MIXED[:3], names, strict=True):
        (root / item.name).rename(root / unicodedata.normalize("NFD", name))
    lines = ["name,score", *(f"{unicodedata.normalize('NFC', n)},{i + 1}" for i, n in enumerate(names))]
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = iqa("custom", "--root", root, "--name", "accents", "--splits", "0", "-j", "1")
    assert result.exit_code == 0, result.output
    with open_cache(_isolated_home / "data" / "accents.h5") as cache:
        assert cache.names == [unicodedata.normalize("NFD", n) for n in names]  # as on disk
        assert list(cache.scores) == [1, 2, 3]
    csv_path.write_text(
        csv_path.read_text(encoding="utf-8") + unicodedata.normalize("NFD", names[0]) + ",4\n", encoding="utf-8"
    )
    result = iqa("custom", "--root", root, "--name", "again", "--splits", "0", "-j", "1")
    assert failed(result, "line 5", "again (first on line 2)"), result.output


def _distorted_folder(root: Path, references: int = 6, levels: int = 4) -> Path:
    """A KADID-10k-like custom set: references and their distortions below `root`, a CSV naming both."""
    from tests.data.imagefolder import save, smooth_image

    lines = ["dist_img,ref_img,quality,var"]
    for r in range(references):
        save(root / "refs" / f"I{r:02d}.png", smooth_image(40, 32, r))
        for d in range(levels):
            save(root / f"I{r:02d}_{d:02d}.png", smooth_image(40, 32, 100 + 10 * r + d))
            lines.append(f"I{r:02d}_{d:02d}.png,refs/I{r:02d}.png,{1 + 0.9 * d + 0.05 * r:.2f},0.1")
    csv_path = root / "scores.csv"
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path


def test_references_of_very_different_sizes_give_test_parts_far_from_the_fraction_and_say_so(tmp_path):
    """Reference-disjoint splits draw whole references: with one reference of 4 images and one of 20, a
    split's test part held 20 of 24 images (83 %) for `--test-fraction 0.2`, without a word."""
    root = tmp_path / "distorted"
    csv_path = _distorted_folder(root, references=2, levels=4)
    lines = csv_path.read_text(encoding="utf-8").splitlines()
    extra = [f"I00_{d:02d}.png,refs/I00.png,{1 + 0.1 * d:.2f},0.1" for d in range(4, 20)]
    for d in range(4, 20):  # reference I00 gets 20 distortions, I01 keeps 4
        (root / f"I00_{d:02d}.png").write_bytes((root / f"I00_{d % 4:02d}.png").read_bytes()[:-1] + bytes([d]))
    csv_path.write_text("\n".join([*lines, *extra]) + "\n", encoding="utf-8")
    result = iqa("custom", "--root", root, "--name", "uneven", "--higher-better", "--references", "ref_img", "-j", "1",
                 "--splits", "2")  # fmt: skip
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "2 of 2 splits have a test part far from the 20% asked (random_0: " in said
    assert "the splits draw whole references" in said


def test_a_reference_column_gives_reference_disjoint_splits_and_is_not_ignored_silently(tmp_path, _isolated_home):
    """A custom set of synthetic distortions with a `ref_img` column was split over images: distortions of one
    scene sat in the training and the test part, and the test figures read as unseen content."""
    root = tmp_path / "distorted"
    _distorted_folder(root)
    warned = "column 'ref_img' looks like each image's reference, which iqa does not read unless told"
    plain = iqa("custom", "--root", root, "--name", "plain", "--higher-better", "-j", "1")
    assert plain.exit_code == 0 and " ".join(plain.output.split()).count(warned) == 1, plain.output
    assert "--references ref_img" in " ".join(plain.output.split())
    with open_cache(_isolated_home / "data" / "plain.h5") as cache:
        parts = cache.split("random_0")
        scene = [name.split("_")[0] for name in cache.names]
        shared = {scene[i] for i in parts["train"]} & {scene[i] for i in parts["test"]}
        assert shared  # what the image-level split did: the same scenes on both sides

    told = iqa("custom", "--root", root, "--name", "byref", "--higher-better", "--references", "REF_IMG", "-j", "1")
    assert told.exit_code == 0 and "looks like" not in told.output, told.output
    assert "far from the" not in told.output  # references of one size: test parts near the fraction asked
    with open_cache(_isolated_home / "data" / "byref.h5") as cache:
        assert cache.attrs["reference_disjoint"] and len(set(cache.ref_ids.tolist())) == 6
        for name in cache.split_names():
            parts = cache.split(name)
            assert not set(cache.ref_ids[parts["train"]]) & set(cache.ref_ids[parts["test"]]), name
        assert cache.reference_digests is not None and (cache.reference_digests > 0).all()  # refs/ files found

    assert failed(iqa("custom", "--root", root, "--name", "x", "--higher-better", "--references", "nope"),
                  "--references: the header row has no column 'nope'")  # fmt: skip
    assert failed(iqa("custom", "--root", root, "--name", "x", "--higher-better", "--references", "quality"),
                  "--references: 'quality' is the image name, score or std column")  # fmt: skip
    text = (root / "scores.csv").read_text(encoding="utf-8").replace(",refs/I02.png,", ",,", 1)
    (root / "scores.csv").write_text(text, encoding="utf-8")
    assert failed(iqa("custom", "--root", root, "--name", "x", "--higher-better", "--references", "ref_img"),
                  "line 10 names no reference in column 'ref_img'")  # fmt: skip


def test_inspect_lists_one_line_per_image_whatever_its_name_holds(tmp_path):
    """`inspect --split` printed `part<TAB>name` lines: a name's own tab or newline made two columns or two
    lines of one image, so `cut -f2` and `wc -l` miscounted. Such names are shown escaped (JSON: exact)."""
    from PIL import Image

    from tests.data.imagefolder import smooth_image

    root = tmp_path / "odd"
    root.mkdir()
    odd = ["tab\there.png", "new\nline.png", "plain.png", "esc\x1b[2K.png"]
    for i, name in enumerate(odd):
        Image.fromarray(smooth_image(48, 32, i)).save(root / name)
    rows = "".join(f'"{name}",{i + 1}\n' for i, name in enumerate(odd))
    (root / "scores.csv").write_text("name,score\n" + rows, encoding="utf-8")
    out = tmp_path / "odd.h5"
    built = iqa("custom", "--root", root, "--name", "odd", "--out", out, "-j", "1", "--splits", "1")
    assert built.exit_code == 0, built.output
    listed = iqa("inspect", out, "--split", "0")
    assert listed.exit_code == 0 and "\x1b" not in listed.stdout, listed.output
    lines = listed.stdout.splitlines()
    assert len(lines) == 4 and all(line.count("\t") == 1 for line in lines), lines
    shown = {"tab\\there.png", "new\\nline.png", "plain.png", "esc\\x1b[2K.png"}
    assert {line.split("\t")[1] for line in lines} == shown
    exact = json.loads(iqa("inspect", out, "--split", "0", "--json").stdout)
    assert sorted(exact["train"] + exact["test"]) == sorted(odd)


@pytest.mark.parametrize(
    ("error", "code", "said"),
    [
        (OSError(24, "Too many open files"), 74, "Too many open files; this process may open no more files"),
        (OSError(5, "Input/output error"), 74, "Input/output error"),
        (MemoryError(), 1, "MemoryError: out of memory while reading"),
    ],
)
def test_a_read_error_of_the_machine_stops_the_work_even_with_skip_bad(tmp_path, monkeypatch, error, code, said):
    """`--skip-bad` took any failure to read an image for a bad file: out of memory, out of file handles or
    an I/O error of the storage dropped good images from the cache (logged at info level only), and the
    run went on with fewer images than the dataset holds."""
    from iqa_cli.data import decode

    original = decode.decode_image
    victim = sorted(p.name for p in MIXED)[1]

    def failing(path, *args, **kwargs):
        if Path(path).name == victim:
            raise error
        return original(path, *args, **kwargs)

    monkeypatch.setattr(decode, "decode_image", failing)
    root = tmp_path / "photos"
    make_folder(root)
    out = tmp_path / "caches" / "mine.h5"
    result = iqa("custom", "--root", root, "--name", "mine", "--out", out, "--size", "32x24", "-j", "1", "--skip-bad")
    assert result.exit_code == code and failed(result, said, victim), result.output
    assert not out.exists()


def test_a_score_list_saved_as_excel_s_unicode_text_is_read(tmp_path):
    """Excel's "Unicode Text" (UTF-16 with its mark, tab-separated) was "not a UTF-8 text file"."""
    root = tmp_path / "photos"
    csv_path = make_folder(root)
    rows = csv_path.read_text(encoding="utf-8").replace(",", "\t")
    csv_path.unlink()
    (root / "scores.txt").write_text(rows, encoding="utf-16")
    out = tmp_path / "u16.h5"
    args = ["custom", "--root", root, "--csv", root / "scores.txt", "--name", "u16", "--out", out, "-j", "1"]
    result = iqa(*args, "--size", "32x24")
    assert result.exit_code == 0, result.output
    with open_cache(out) as cache:
        assert len(cache) == len(rows.strip().splitlines()) - 1
