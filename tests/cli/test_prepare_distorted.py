"""`iqa prepare distorted` and `iqa prepare merge` through the CLI."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.data.cache import open_cache
from tests.distort.images import write_reference_folder

runner = CliRunner()
FAST = ["--types", "1,11", "--levels", "1-2", "--size", "80x64", "--workers", "1"]


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    return write_reference_folder(tmp_path_factory.mktemp("refs"), count=4)


def invoke(*args: str):
    return runner.invoke(app, ["prepare", *args])


def test_distorted_writes_a_cache(refs, tmp_path):
    out = tmp_path / "set.h5"
    result = invoke("distorted", "--refs", str(refs), "--out", str(out), *FAST, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["count"] == 4 * 2 * 2 and summary["shard"] == "1/1" and summary["images_per_second"] > 0
    with open_cache(out) as cache:
        assert len(cache) == 16 and cache.attrs["distortion_types"] == [1, 11]
    inspect = invoke("inspect", str(out), "--json")
    assert inspect.exit_code == 0, inspect.output
    assert json.loads(inspect.stdout)["count"] == 16


def test_an_out_under_a_file_is_refused_before_any_image_is_made(refs, tmp_path):
    (tmp_path / "a_file").write_text("", encoding="utf-8")
    result = invoke("distorted", "--refs", str(refs), "--out", str(tmp_path / "a_file" / "d.h5"), *FAST)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        f"error: --out: {tmp_path / 'a_file'} is a file, so {tmp_path / 'a_file' / 'd.h5'} cannot be written"
    )
    merged = invoke("merge", str(tmp_path / "p1.h5"), "--out", str(tmp_path / "a_file" / "m.h5"))
    assert merged.exit_code == 2 and "is a file, so" in merged.output


def test_default_output_is_in_iqa_home(refs, _isolated_home):
    result = invoke("distorted", "--refs", str(refs), *FAST)
    assert result.exit_code == 0, result.output
    assert (_isolated_home / "data" / "distorted.h5").is_file()
    assert "wrote 16 images of 4 references" in result.stdout


def test_resume_flag_on_a_fresh_run(refs, tmp_path):
    result = invoke("distorted", "--refs", str(refs), "--out", str(tmp_path / "r.h5"), *FAST, "--resume", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["resumed_references"] == 0


def _two_shards(refs, folder) -> list[str]:
    """The distorted set of `refs` made as shards 1/2 and 2/2 in `folder`."""
    parts = []
    for index in (1, 2):
        part = folder / f"part{index}.h5"
        result = invoke("distorted", "--refs", str(refs), "--out", str(part), *FAST, "--shard", f"{index}/2")
        assert result.exit_code == 0, result.output
        parts.append(str(part))
    return parts


def test_shards_then_merge(refs, tmp_path):
    parts = _two_shards(refs, tmp_path)
    merged = tmp_path / "merged.h5"
    result = invoke("merge", *parts, "--out", str(merged), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["complete"] and summary["count"] == 16 and summary["parts"] == 2
    refused = invoke("merge", parts[1], "--out", str(tmp_path / "half.h5"))
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.exit_code != 0 and len(errors) == 1 and "references 0..2 of 4" in errors[0]
    plain = invoke("merge", parts[0], "--out", str(tmp_path / "half.h5"), "--allow-partial")
    assert plain.exit_code == 0 and "references 0..2" in plain.stdout
    # Shards of two splittings overlap: the error asked "the same shard given twice?"
    third = tmp_path / "third.h5"
    assert invoke("distorted", "--refs", str(refs), "--out", str(third), *FAST, "--shard", "2/3").exit_code == 0
    mixed = invoke("merge", parts[0], str(third), "--out", str(tmp_path / "mixed.h5"))
    assert mixed.exit_code != 0 and "shard 2/3 and shard 1/2 cut the references into other numbers" in mixed.output


def test_preview_writes_only_the_grid(refs, tmp_path):
    sheet = tmp_path / "grid.png"
    result = invoke("distorted", "--refs", str(refs), "--preview", str(sheet), "--types", "1-3,30", "--size", "80x64")
    assert result.exit_code == 0, result.output
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1] / 2
    assert not list(tmp_path.glob("*.h5"))
    again = invoke("distorted", "--refs", str(refs), "--preview", str(sheet), "--types", "1", "--size", "80x64")
    assert again.exit_code == 0, again.output  # a PNG is replaced by the new sheet
    # `--preview refs/a.jpg` replaced a reference photo with the sheet (PNG bytes under a .jpg name).
    photo = next(p for p in sorted(refs.rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"))
    kept = photo.read_bytes()
    wrong_suffix = invoke("distorted", "--refs", str(refs), "--preview", str(photo.with_suffix(".jpg")), "--types", "1")
    assert wrong_suffix.exit_code == 2 and "must end in .png" in wrong_suffix.output
    png_photo = tmp_path / "photo.png"  # a reference photo that is a PNG: the suffix alone does not protect it
    Image.new("RGB", (8, 8)).save(png_photo)
    photo_bytes = png_photo.read_bytes()
    onto = invoke("distorted", "--refs", str(refs), "--preview", str(png_photo), "--types", "1")
    assert onto.exit_code == 2 and "exists and is a PNG image iqa did not write (a photo?)" in onto.output
    assert photo.read_bytes() == kept and png_photo.read_bytes() == photo_bytes


def test_list_types(refs):
    result = invoke("distorted", "--list-types")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 30 and lines[9].split()[1] == "jpeg"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--types", "0"], "--types"),
        (["--levels", "6"], "--levels"),
        (["--shard", "3"], "--shard"),
        (["--size", "16x16"], "too small"),
        (["--out", "x.npz"], "HDF5"),
        (["--seed", "-1"], "--seed"),  # was numpy's raw ValueError, exit 1
        (["--walk-target", "5"], "--walk-target: how far type 27 walks VIPNet's lists"),  # was ignored
        (["--refs-list", "BINARY"], "is not a UTF-8 text file"),  # was a raw UnicodeDecodeError, exit 1
    ],
)
def test_bad_options_give_one_line_errors(refs, tmp_path, args, message):
    binary = tmp_path / "list.h5"
    binary.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)))  # a cache named where the list goes
    args = [str(binary) if arg == "BINARY" else arg for arg in args]
    result = invoke("distorted", "--refs", str(refs), "--out", str(tmp_path / "e.h5"), *args)
    assert result.exit_code in (2, 65)
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_missing_refs(tmp_path):
    result = invoke("distorted", "--out", str(tmp_path / "e.h5"))
    assert result.exit_code != 0 and "--refs" in result.stderr
    result = invoke("distorted", "--refs", str(tmp_path / "none"), "--out", str(tmp_path / "e.h5"))
    assert result.exit_code != 0 and "reference folder not found" in result.stderr


@pytest.mark.parametrize("fraction", ["0", "1", "-0.5", "2"])
def test_a_test_fraction_outside_0_1_is_refused_while_parsing(refs, tmp_path, fraction):
    """`prepare distorted` and `merge` took any --test-fraction (2 was found only at the split, after the images)."""
    made = invoke("distorted", "--refs", str(refs), "--out", str(tmp_path / "d.h5"), *FAST, "--test-fraction", fraction)
    merged = invoke("merge", str(tmp_path / "p1.h5"), "--out", str(tmp_path / "m.h5"), "--test-fraction", fraction)
    for result in (made, merged):
        assert result.exit_code == 2, result.output
        assert "--test-fraction" in result.output and "not a share strictly between 0 and 1" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_folder_whose_file_system_refuses_locks_is_one_line_naming_the_lock(refs, tmp_path, monkeypatch):
    """NFS without its lock daemon answers flock with ENOLCK: the generator's lock printed "error: No
    locks available", naming no file."""
    import errno
    import fcntl

    def flock(fd, operation):
        if operation & fcntl.LOCK_EX:
            raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", flock)
    result = invoke("distorted", "--refs", str(refs), "--out", str(tmp_path / "d.h5"), *FAST)
    lines = [line for line in result.output.splitlines() if line.strip().startswith("error:")]
    assert result.exit_code == 65 and len(lines) == 1, result.output
    assert ".d.h5.lock: cannot lock it (No locks available)" in lines[0] and not (tmp_path / "d.h5").exists()


def test_copies_among_the_references_stay_on_their_original_s_side(tmp_path):
    """A reference folder holding the same picture twice got two reference ids, so a split put the
    distortions of one picture on both sides and the DPM's validation part held pictures it trained on."""
    import shutil

    refs = write_reference_folder(tmp_path / "refs", count=4)
    shutil.copyfile(refs / "ref0.png", refs / "zz_copy_of_0.png")
    shutil.copyfile(refs / "sub" / "ref2.png", refs / "zz_copy_of_2.png")
    out = tmp_path / "set.h5"
    result = invoke("distorted", "--refs", str(refs), "--out", str(out), *FAST, "--splits", "10")
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "2 reference file(s) are byte-identical copies of others (e.g. zz_copy_of_0 = ref0)" in said
    with open_cache(out) as cache:
        reference = [name.rsplit("_", 2)[0] for name in cache.names]
        same = {"zz_copy_of_0": "ref0", "zz_copy_of_2": "sub/ref2"}
        picture = [same.get(r, r) for r in reference]
        for split in cache.split_names():
            parts = cache.split(split)
            train, test = ({picture[i] for i in parts[p]} for p in ("train", "test"))
            assert not train & test, split
    # made in two shards (zz_copy_of_0 in the other shard than ref0) and merged: the same rule
    parts = _two_shards(refs, tmp_path)
    merged = tmp_path / "merged.h5"
    assert invoke("merge", *parts, "--out", str(merged), "--splits", "10").exit_code == 0
    with open_cache(merged) as cache:
        picture = [same.get(r, r) for r in (name.rsplit("_", 2)[0] for name in cache.names)]
        for split in cache.split_names():
            parts_of = cache.split(split)
            assert not {picture[i] for i in parts_of["train"]} & {picture[i] for i in parts_of["test"]}, split
