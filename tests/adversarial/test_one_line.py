"""Errors that used to escape as bare Python exceptions: each is `error: <file or option>: <what was
expected>`, found before the work where it can be, and leaves nothing half-written."""

from __future__ import annotations

import errno
import os

import pytest

from iqa_cli.data import cache_write
from iqa_cli.home import data_dir
from tests.adversarial.helpers import error_line, invoke
from tests.data.fixtures import FIXTURES
from tests.data.imagefolder import make_folder
from tests.train.caches import make_cache


def test_an_unknown_label_scale_is_an_option_error(tmp_path):
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    line = error_line(invoke("train", "vtiqa", "--tiny", "--data", "mini", "--label-scale", "bogus", "--out",
                             tmp_path / "run"))  # fmt: skip
    assert "--label-scale: must be one of paper, range, native, got 'bogus'" in line
    assert "KeyError" not in line and not (tmp_path / "run").exists()


def test_looping_symlinks_under_the_root_are_skipped(tmp_path):
    expected = FIXTURES["livew"](tmp_path / "root")
    root = expected.root
    os.symlink("loopy", root / "loopy")
    os.symlink("b", root / "a")
    os.symlink("a", root / "b")
    os.symlink("..", next(root.rglob("Data")).parent / "up")
    result = invoke("prepare", "livew", "--root", root, "--out", tmp_path / "l.h5", "-j", "1")
    assert result.exit_code == 0, result.output


def test_a_file_name_that_is_not_utf8_is_named_before_decoding(tmp_path):
    root = tmp_path / "photos"
    make_folder(root)
    bad = os.fsencode(str(root)) + b"/caf\xe9.jpg"
    os.rename(root / "a.jpg", bad)
    (root / "scores.csv").write_bytes(b"name,score\n" + b"caf\xe9.jpg,10\nb.png,20\n")
    result = invoke("prepare", "custom", "--root", root, "--csv", root / "scores.csv", "--name", "m", "-j", "1")
    line = error_line(result)
    assert "UnicodeEncodeError" not in line and ("UTF-8" in line or "utf-8" in line.lower())


def test_an_unwritable_out_names_the_out_not_a_temporary_file(tmp_path):
    root = tmp_path / "photos"
    csv_path = make_folder(root)
    blocker = tmp_path / "afile"
    blocker.write_text("I am a file, not a folder", encoding="utf-8")
    out = blocker / "mine.h5"
    line = error_line(invoke("prepare", "custom", "--root", root, "--csv", csv_path, "--name", "m", "--out", out))
    assert (
        str(out) in line
        and "is a file, so" in line
        and "cannot be written" in line
        and ".partial" not in line
        and ".lock" not in line
    )


def test_a_full_disk_is_one_line_naming_the_cache(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    csv_path = make_folder(root)
    out = tmp_path / "caches" / "mine.h5"

    def full(self, slot, image):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.file.filename))

    monkeypatch.setattr(cache_write._H5Sink, "put", full)
    line = error_line(invoke("prepare", "custom", "--root", root, "--csv", csv_path, "--name", "m", "--out", out,
                             "-j", "1"))  # fmt: skip
    assert line.startswith(f"error: {out}: No space left on device") and "free some space" in line
    assert not out.exists() and [p.name for p in out.parent.iterdir()] == []


def test_too_many_open_files_says_what_to_raise(tmp_path, monkeypatch):
    root = tmp_path / "photos"
    csv_path = make_folder(root)

    def no_more_files(processes):  # what starting the decode workers meets under a low `ulimit -n`
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(cache_write, "worker_pool", no_more_files)
    line = error_line(invoke("prepare", "custom", "--root", root, "--csv", csv_path, "--name", "m", "--out",
                             tmp_path / "m.h5", "-j", "2"))  # fmt: skip
    assert line == (
        "error: Too many open files; this process may open no more files: raise the limit (`ulimit -n`), or use "
        "fewer workers (-j)"
    )


@pytest.mark.parametrize("args", [["train", "bogus-method"], ["prepare", "bogus-dataset"]])
def test_unknown_commands_fail_with_a_non_zero_exit(args):
    result = invoke(*args)
    assert result.exit_code != 0 and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["demo", "--seed", "-1"],
        ["al", "select", "--data", "mini", "--tiny", "--device", "cpu", "--out", "x.txt", "--seed", "-1"],
    ],
)
def test_a_negative_seed_is_refused_before_the_work(args, tmp_path):
    """`iqa demo --seed -1` wrote 1,170 images, then stopped on numpy's raw ValueError (exit 1)."""
    result = invoke(*args)
    line = error_line(result)
    assert result.exit_code == 2 and "'--seed'" in line
    # Typer's own wording, or click's before Typer reworded its range errors.
    assert "greater than or equal to 0" in line or "not in the range x>=0" in line


def test_a_terminal_that_cannot_show_a_name_gets_it_escaped(tmp_path):
    """Under an ASCII (or Latin-1) locale, printing `café.png` ended `iqa predict`, `iqa prepare inspect`
    and every table after the work, as an internal error (exit 1)."""
    import unicodedata

    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.cache_write import CacheOptions
    from iqa_cli.data.datasets.custom import make_spec
    from tests.adversarial.helpers import run_iqa
    from tests.train.caches import write_folder

    folder = write_folder(tmp_path / "photos", n=12)
    for path in folder.glob("*.png"):  # decomposed, as macOS writes accented names
        path.rename(path.with_name(unicodedata.normalize("NFD", f"café_{path.name}")))
    rows = (folder / "scores.csv").read_text(encoding="utf-8").splitlines()
    (folder / "scores.csv").write_text(
        "\n".join([rows[0], *(f"café_{row}" for row in rows[1:])]) + "\n", encoding="utf-8"
    )
    spec = make_spec("cafe", folder / "scores.csv", root=folder, native_range=(1.0, 5.0))
    build_cache(spec, folder, tmp_path / "cafe.h5", CacheOptions(workers=1, splits=1, test_fraction=0.25))
    result = run_iqa("prepare", "inspect", tmp_path / "cafe.h5", "--split", "random_0",
                     env={"PYTHONIOENCODING": "ascii", "IQA_HOME": str(tmp_path / "home")})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "cafe\\u0301_img0" in result.stdout
