"""`check_output_file`: output paths that cannot be written are refused before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from iqa_cli.atomic import check_output_file, check_output_folder
from iqa_cli.errors import ConfigError


def test_a_folder_a_file_in_the_way_and_a_missing_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"--csv: .* is a folder; give a file name"):
        check_output_file(tmp_path, "--csv")
    (tmp_path / "f").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"--csv: .*/f is a file, so .*/f/a/b.csv cannot be written"):
        check_output_file(tmp_path / "f" / "a" / "b.csv", "--csv")
    assert check_output_file(tmp_path / "new" / "b.csv", "--csv") == tmp_path / "new" / "b.csv"
    assert not (tmp_path / "new").exists()  # checked, not made


def test_a_folder_without_write_permission(tmp_path, monkeypatch):
    # Tests run as root here, which may write anywhere: the permission answer itself is stubbed.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ConfigError, match=r"--per-image: cannot write in .* \(permission denied\)"):
        check_output_file(tmp_path / "x.csv", "--per-image")


def test_an_output_folder_where_a_file_stands(tmp_path):
    (tmp_path / "f").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"--out: .*/f is a file; expected a folder"):
        check_output_folder(tmp_path / "f", "--out")
    with pytest.raises(ConfigError, match=r"--out: .*/f is a file, so .*/f/run cannot be written"):
        check_output_folder(tmp_path / "f" / "run", "--out")
    assert check_output_folder(tmp_path / "runs" / "a", "--out") == tmp_path / "runs" / "a"
    assert check_output_folder(tmp_path, "--out") == tmp_path  # an existing folder (a resumed run) is fine


def test_a_text_or_png_output_never_replaces_a_file_of_another_kind(tmp_path):
    """`--per-image best.safetensors` or `--csv koniq.h5` replaced a trained model or a cache after the
    evaluation, exit 0: a typo destroyed what no command can rebuild."""
    import h5py
    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from iqa_cli.atomic import PNG, TEXT

    files = {
        "model.safetensors": "a safetensors file",
        "cache.h5": "an HDF5 file",
        "last.pt": "a zip archive",
        "photo.jpg": "a JPEG image",
        "photo.png": "a PNG image",
    }
    save_file({"w": torch.zeros(3)}, str(tmp_path / "model.safetensors"))
    with h5py.File(tmp_path / "cache.h5", "w") as handle:
        handle["scores"] = np.zeros(3)
    torch.save({"w": torch.zeros(3)}, tmp_path / "last.pt")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    for name, what in files.items():
        before = (tmp_path / name).read_bytes()
        with pytest.raises(ConfigError, match=f"--csv: .*{name} exists and is {what}.*it is not replaced"):
            check_output_file(tmp_path / name, "--csv", kind=TEXT)
        assert (tmp_path / name).read_bytes() == before
    (tmp_path / "old.csv").write_text("name,score\na.png,3\n", encoding="utf-8")
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    for name in ("old.csv", "empty.csv", "new.csv"):
        check_output_file(tmp_path / name, "--csv", kind=TEXT)  # text, empty or new: replaced as usual
    with pytest.raises(ConfigError, match="exists and is a JPEG image, not a PNG image written by iqa"):
        check_output_file(tmp_path / "photo.jpg", "--plot", kind=PNG)
    # A PNG photo is no figure of ours: `--plot photos/a.png` would have replaced it.
    with pytest.raises(ConfigError, match=r"photo.png exists and is a PNG image iqa did not write \(a photo\?\)"):
        check_output_file(tmp_path / "photo.png", "--plot", kind=PNG)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure()
    figure.savefig(tmp_path / "old-plot.png")  # matplotlib's Software text marks it as a figure
    plt.close(figure)
    check_output_file(tmp_path / "old-plot.png", "--plot", kind=PNG)


def test_a_table_replaces_only_a_table_it_wrote_before(tmp_path):
    """`iqa eval --csv photos/scores.csv` replaced a dataset's score list with the metrics table."""
    from iqa_cli.atomic import TEXT

    scores = tmp_path / "scores.csv"
    scores.write_text("name,score\na.jpg,3.5\n", encoding="utf-8")
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("dataset,split,n,srcc\nmini,random_0,8,0.5\n", encoding="utf-8")
    ours = ("dataset,split,",)
    with pytest.raises(ConfigError, match=r"is a text file this option did not write \(it begins 'name,score'\)"):
        check_output_file(scores, "--csv", kind=TEXT, headers=ours)
    check_output_file(metrics, "--csv", kind=TEXT, headers=ours)  # its own earlier table: replaced as usual
    check_output_file(scores, "--out", kind=TEXT)  # without headers (a .txt list of names), any text goes


def test_a_pipe_is_written_into_never_replaced(tmp_path):
    """`--csv FIFO` (a reader waiting on a named pipe; as root, `--csv /dev/null` too) was replaced by a
    regular file through the rename: the reader got nothing, and /dev/null would have become a file."""
    import threading

    from iqa_cli.atomic import TEXT, atomic_path

    fifo = tmp_path / "results.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    assert check_output_file(fifo, "--csv", kind=TEXT, headers=("path,",)) == fifo
    with atomic_path(fifo) as tmp:
        tmp.write_text("path,score\na.jpg,1\n", encoding="utf-8")
    reader.join(timeout=10)
    assert received == [b"path,score\na.jpg,1\n"] and fifo.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.fifo"]


def test_a_device_that_may_be_written_is_accepted_before_the_work():
    """`--csv /dev/null` was refused as a folder one cannot write in (/dev), or, as root, accepted and then
    replaced. Only checked here: nothing is written."""
    assert check_output_file("/dev/null", "--csv") == Path("/dev/null")


def test_a_symbolic_link_is_written_through_and_stays_a_link(tmp_path):
    """An output named through a link (a cache linked to a scratch disk) replaced the link with a regular
    file beside it: the scratch copy stayed old, and the new file filled the small disk."""
    from iqa_cli.atomic import TEXT, atomic_path

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "scores.csv").write_text("path,score\nold.jpg,1\n", encoding="utf-8")
    link = tmp_path / "home" / "scores.csv"
    link.parent.mkdir()
    link.symlink_to(scratch / "scores.csv")
    assert check_output_file(link, "--csv", kind=TEXT, headers=("path,",)) == link
    with atomic_path(link) as tmp:
        tmp.write_text("path,score\nnew.jpg,2\n", encoding="utf-8")
    assert link.is_symlink() and (scratch / "scores.csv").read_text(encoding="utf-8") == "path,score\nnew.jpg,2\n"
    assert [p.name for p in link.parent.iterdir()] == ["scores.csv"]
    # what the check refuses is judged by the file the link points at: a cache behind a link stays safe
    (scratch / "cache.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    (tmp_path / "home" / "cache.h5").symlink_to(scratch / "cache.h5")
    with pytest.raises(ConfigError, match="exists and is an HDF5 file"):
        check_output_file(tmp_path / "home" / "cache.h5", "--csv", kind=TEXT)


def test_an_output_with_a_long_but_valid_name_is_written(tmp_path):
    """An output named with 230 bytes (under the 255-byte limit) failed after the work: its temporary
    name `.<name>.<host>.<pid>.<random>.partial` and its lock `.<name>.lock` were over the limit."""
    import subprocess

    from iqa_cli.atomic import _host, atomic_path, stale_partials, user_path
    from iqa_cli.locks import hold

    final = tmp_path / ("é" * 110 + "-scores.csv")  # 227 bytes in UTF-8
    assert len(os.fsencode(final.name)) < 255
    with hold(final), atomic_path(final) as tmp:
        assert len(os.fsencode(tmp.name)) <= 255 and user_path(tmp) == str(final)  # errors name the output
        tmp.write_text("path,score\n", encoding="utf-8")
    assert final.read_text(encoding="utf-8") == "path,score\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]
    # a dead process's partial file of the same output is found again by the next write, and removed
    dead = subprocess.Popen(["true"])
    dead.wait()
    with atomic_path(final) as tmp:
        left = tmp.with_name(tmp.name.replace(f".{os.getpid()}.", f".{dead.pid}."))
        left.write_bytes(b"half")
    assert stale_partials(final) == [left] and _host() in left.name
    with atomic_path(final) as tmp:
        tmp.write_text("again\n", encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


def test_a_name_longer_than_the_file_system_takes_is_refused_before_the_work(tmp_path):
    with pytest.raises(ConfigError, match=r"--csv: the name 'nnnn.*is 300 bytes; names here hold at most"):
        check_output_file(tmp_path / ("n" * 300) / "scores.csv", "--csv")


def test_a_file_system_that_keeps_no_permissions_still_gets_the_output(tmp_path, monkeypatch):
    """On a FAT or exFAT drive (a laptop's USB disk) or some SMB mounts, chmod fails with EPERM: the output
    was lost after the work, for permissions that file system cannot keep anyway."""
    import errno

    from iqa_cli.atomic import atomic_path

    def refuse(path, mode):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "chmod", refuse)
    with atomic_path(tmp_path / "scores.csv") as tmp:
        tmp.write_text("path,score\n", encoding="utf-8")
    assert (tmp_path / "scores.csv").read_text(encoding="utf-8") == "path,score\n"
