"""`generate_distorted`, resume, shards + merge, references, preview."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from PIL import Image

from iqa_cli.data.cache import open_cache
from iqa_cli.distort import store
from iqa_cli.distort.generate import DistortOptions, generate_distorted, load_reference
from iqa_cli.distort.merge import merge_parts
from iqa_cli.distort.preview import preview_layout, write_preview
from iqa_cli.distort.refs import KADIS_CSV, list_references, shard_range
from iqa_cli.distort.registry import TYPES, class_from_name
from iqa_cli.distort.seeding import choose_types, pair_rng
from iqa_cli.distort.store import read_labels
from iqa_cli.errors import ConfigError, DataError
from tests.distort.images import write_reference_folder

SIZE = (80, 64)
TYPES_USED = [1, 10, 11, 23, 27]  # blur, codec, random noise, random patches, and 27 (skipped on tiny refs)


def generate(refs, out, progress=None, **options):
    """`generate_distorted` with its options as keywords."""
    return generate_distorted(refs, out, DistortOptions(**options), progress=progress)


OPTIONS = {"types": TYPES_USED, "seed": 3, "size": SIZE, "splits": 1, "test_fraction": 0.25}


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    return list_references(write_reference_folder(tmp_path_factory.mktemp("refs"), count=4, size=SIZE))


@pytest.fixture(scope="module")
def single_run(refs, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "set.h5"
    summary = generate(refs, out, workers=1, **OPTIONS)
    return out, summary


def read_everything(path) -> dict:
    """Every dataset (recursively) and attribute of a cache, for exact comparisons ('created' left out)."""
    content: dict = {}
    with h5py.File(path, "r") as handle:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                content[name] = obj[()]

        handle.visititems(visit)
        attrs = {k: v for k, v in handle.attrs.items() if k != "created"}
        content["@attrs"] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in attrs.items()}
        content["@splits"] = {k: v for k, v in handle["splits"].attrs.items()}
    return content


def assert_same_cache(a, b) -> None:
    left, right = read_everything(a), read_everything(b)
    assert sorted(left) == sorted(right)
    for key in left:
        if isinstance(left[key], np.ndarray):
            nan_ok = left[key].dtype.kind == "f"
            assert np.array_equal(left[key], right[key], equal_nan=nan_ok), key
        else:
            assert left[key] == right[key], key


def test_writes_a_labelled_cache_the_reader_accepts(refs, single_run):
    out, summary = single_run
    with open_cache(out) as cache:
        n = len(cache)
        assert n == summary.count
        assert cache.shape == (n, SIZE[1], SIZE[0], 3)
        assert cache.attrs["kind"] == "distorted" and cache.attrs["format_version"] == 1
        with h5py.File(out, "r") as handle:
            labels, types, levels = (np.asarray(handle[k][()]) for k in ("labels", "dist_type", "level"))
        assert np.array_equal(labels, (types - 1) * 5 + (levels - 1))
        assert np.array_equal(cache.scores, levels.astype(np.float32))
        # every (reference, type, level) once, except type 27 where it was not applicable
        pairs = {(int(r), int(t)) for r, t in zip(cache.ref_ids, types, strict=True)}
        expected = {(r, t) for r in range(len(refs)) for t in TYPES_USED}
        missing = expected - pairs
        assert {t for _, t in missing} <= {27} and len(missing) == summary.not_applicable
        assert n == (len(expected) - len(missing)) * 5
        assert cache.names[0] == f"{refs[0].name}_01_01.bmp" and cache.names[-1].endswith(".bmp")
        # each reference's file digest, so a DPM trained on it records the files whose content it saw
        from iqa_cli.data.decode import file_digest
        from iqa_cli.train.data import seen_files

        assert cache.reference_digests is not None
        assert cache.reference_digests.tolist() == [file_digest(ref.path) for ref in refs]
        assert seen_files(cache, np.arange(n)).tolist() == sorted(file_digest(ref.path) for ref in refs)
        # reference-disjoint split
        split = cache.split("random_0")
        assert not set(cache.ref_ids[split["train"]]) & set(cache.ref_ids[split["test"]])
        # the stored pixels are the pure function's output on the resized reference
        for index in (0, n // 2, n - 1):
            ref_id, type_id, level = int(cache.ref_ids[index]), int(types[index]), int(levels[index])
            reference = load_reference(refs[ref_id].path, SIZE)
            expected_image = TYPES[type_id].fn(reference, level, pair_rng(3, ref_id, type_id, level))
            assert np.array_equal(cache.image(index), expected_image)


class StopAfter:
    """A progress sink that interrupts the run (like Ctrl-C) after `limit` images."""

    def __init__(self, limit: int) -> None:
        self.limit, self.done = limit, 0

    def start(self, description, total):
        pass

    def advance(self, n=1):
        self.done += n
        if self.done >= self.limit:
            raise KeyboardInterrupt

    def log(self, message):
        pass

    def finish(self):
        pass


def test_resume_after_an_interruption_gives_the_same_file(refs, single_run, tmp_path):
    out = tmp_path / "resumed.h5"
    with pytest.raises(KeyboardInterrupt):
        generate(refs, out, workers=1, progress=StopAfter(60), checkpoint_seconds=0.0, **OPTIONS)
    assert not out.exists()
    partial, sidecar = store.partial_path(out), store.progress_path(out)
    assert partial.is_file() and sidecar.is_file()
    with pytest.raises(DataError):
        open_cache(partial)  # the partial file never looks like a valid cache
    state = json.loads(sidecar.read_text(encoding="utf-8"))
    assert 1 <= state["references_done"] < len(refs)

    with pytest.raises(ConfigError, match="other settings"):
        generate(refs, out, workers=1, resume=True, **{**OPTIONS, "seed": 4})

    summary = generate(refs, out, workers=1, resume=True, **OPTIONS)
    assert summary.resumed_references == state["references_done"]
    assert summary.generated < summary.count
    assert not partial.exists() and not sidecar.exists()
    assert_same_cache(out, single_run[0])

    # resuming a finished run (a cluster job started again) does nothing
    mtime = out.stat().st_mtime_ns
    again = generate(refs, out, workers=1, resume=True, **OPTIONS)
    assert again.generated == 0 and again.count == summary.count and out.stat().st_mtime_ns == mtime


def test_a_lost_signal_stops_at_the_next_reference_and_resumes(refs, single_run, tmp_path, monkeypatch):
    """A signal's exception lost in a library let the generator distort every reference before its final
    commit noticed; it now stops after the reference in hand, resumable from there."""
    from iqa_cli.distort import generate as module
    from iqa_cli.stop import Terminated, clear_stop, request_stop

    original, groups = module._group, []

    def losing_a_signal(*args, **kwargs):
        groups.append(1)
        request_stop("SIGTERM")  # what the CLI's handler leaves when its exception is discarded
        return original(*args, **kwargs)

    out = tmp_path / "stopped.h5"
    monkeypatch.setattr(module, "_group", losing_a_signal)
    try:
        with pytest.raises(Terminated):
            generate(refs, out, workers=1, **OPTIONS)
    finally:
        clear_stop()
    assert len(groups) == 1 and not out.exists()
    assert json.loads(store.progress_path(out).read_text(encoding="utf-8"))["references_done"] == 1
    monkeypatch.setattr(module, "_group", original)
    assert generate(refs, out, workers=1, resume=True, **OPTIONS).resumed_references == 1
    assert_same_cache(out, single_run[0])


def test_shards_merged_equal_one_parallel_run(refs, single_run, tmp_path):
    parallel = tmp_path / "parallel.h5"
    generate(refs, parallel, workers=2, **OPTIONS)
    assert_same_cache(parallel, single_run[0])

    parts = []
    for index in (3, 1, 2):
        part = tmp_path / f"part{index}.h5"
        summary = generate(refs, part, workers=1, shard=(index, 3), **OPTIONS)
        assert summary.reference_range == shard_range(len(refs), (index, 3))
        parts.append(part)
    merged = tmp_path / "merged.h5"
    result = merge_parts(parts, merged, splits=1, test_fraction=0.25)
    assert result.complete and result.parts == 3
    assert_same_cache(merged, single_run[0])

    with pytest.raises(DataError, match="overlap"):
        generate(refs, tmp_path / "again.h5", workers=1, shard=(1, 2), **OPTIONS)
        merge_parts([parts[1], tmp_path / "again.h5"], tmp_path / "bad.h5")
    other = tmp_path / "other.h5"
    generate(refs, other, workers=1, shard=(1, 3), **{**OPTIONS, "seed": 9})
    with pytest.raises(DataError, match="distortion_seed"):
        merge_parts([other, parts[2]], tmp_path / "bad.h5")


def test_per_ref_draws_that_many_types(refs, tmp_path):
    out = tmp_path / "sampled.h5"
    generate(refs, out, workers=1, per_ref=2, levels=[1, 5], **{**OPTIONS, "types": [1, 10, 11, 23]})
    with open_cache(out) as cache, h5py.File(out, "r") as handle:
        types = np.asarray(handle["dist_type"][()])
        levels = np.asarray(handle["level"][()])
        assert set(levels.tolist()) == {1, 5}
        for ref_id in range(len(refs)):
            chosen = sorted(set(types[cache.ref_ids == ref_id].tolist()))
            assert tuple(chosen) == choose_types(3, ref_id, (1, 10, 11, 23), 2) and len(chosen) == 2


def test_argument_errors(refs, tmp_path):
    with pytest.raises(ConfigError, match="HDF5"):
        generate(refs, tmp_path / "x.npz", **OPTIONS)
    with pytest.raises(ConfigError, match="too small"):
        generate(refs, tmp_path / "x.h5", **{**OPTIONS, "size": (32, 32)})
    with pytest.raises(ConfigError, match="shard"):
        generate(refs, tmp_path / "x.h5", shard="0/2", **OPTIONS)
    with pytest.raises(ConfigError, match="no references"):
        generate(refs, tmp_path / "x.h5", shard=(5, 8), **OPTIONS)
    with pytest.raises(ConfigError, match="per-ref"):
        generate(refs, tmp_path / "x.h5", per_ref=9, **OPTIONS)
    assert not list(tmp_path.iterdir())


def test_references_from_a_folder_are_sorted_and_named(refs):
    assert [r.name for r in refs] == ["ref0", "ref1", "ref3", "sub/ref2"]


def test_references_from_a_kadis_folder(tmp_path):
    images = tmp_path / "ref_imgs"
    images.mkdir()
    for name in ("b-plant-2.png", "a-cat-1.png"):
        Image.new("RGB", (8, 8)).save(images / name)
    (tmp_path / KADIS_CSV).write_text(
        "ref_im,dist_type_1,dist_type_2\nb-plant-2.png,7,\na-cat-1.png,3,\nb-plant-2.png,9,\n", encoding="utf-8"
    )
    found = list_references(tmp_path)
    assert [r.name for r in found] == ["b-plant-2", "a-cat-1"]  # the CSV's order, each once
    (tmp_path / KADIS_CSV).write_text("ref_im,dist_type_1\nmissing.png,1\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing.png"):
        list_references(tmp_path)


def test_reference_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list_references(tmp_path / "nope")
    with pytest.raises(DataError, match="no reference images"):
        list_references(tmp_path)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    with pytest.raises(DataError, match="share the name"):
        list_references(tmp_path)


def test_a_reference_replaced_under_its_name_is_read_again(tmp_path):
    path = tmp_path / "ref.png"
    Image.new("RGB", (32, 24), (10, 20, 30)).save(path)
    assert load_reference(path, (32, 24))[0, 0].tolist() == [10, 20, 30]
    Image.new("RGB", (32, 24), (200, 100, 50)).save(tmp_path / "new.png")
    os.replace(tmp_path / "new.png", path)  # another reference under the same name (a second run, in Python)
    assert load_reference(path, (32, 24))[0, 0].tolist() == [200, 100, 50]
    path.unlink()
    with pytest.raises(DataError, match="cannot read reference image"):
        load_reference(path, (32, 24))


def test_preview_grid(refs, tmp_path):
    image = load_reference(refs[0].path, (128, 96))
    path = write_preview(tmp_path / "grid.png", image, [1, 27, 30], [1, 3, 5], seed=0, cell_width=64)
    with Image.open(path) as sheet:
        assert sheet.format == "PNG"
        assert sheet.size == preview_layout(3, 3, (64, 48))


def test_lookup3_matches_the_reference_vectors():
    assert store.lookup3(b"") == 0xDEADBEEF
    assert store.lookup3(b"Four score and seven years ago") == 0x17770551  # from lookup3.c's self-test


def test_read_labels(single_run, tmp_path):
    out, summary = single_run
    labels = read_labels(out)
    assert len(labels["labels"]) == summary.count
    assert np.array_equal(labels["labels"], (labels["dist_type"] - 1) * 5 + labels["level"] - 1)
    with open_cache(out) as cache:
        assert [class_from_name(n) for n in cache.names] == labels["labels"].tolist()
    (tmp_path / "not.h5").write_bytes(b"")
    with pytest.raises(DataError):
        read_labels(tmp_path / "not.h5")


_CRASH = """
import os, sys
from iqa_cli.distort.refs import list_references
from tests.distort.test_generate import OPTIONS, generate

class Crash:
    done = 0
    def start(self, *a): pass
    def log(self, *a): pass
    def finish(self): pass
    def advance(self, n=1):
        Crash.done += n
        if Crash.done >= 60:
            os._exit(9)  # like kill -9: no cleanup, the HDF5 file is never closed

generate(list_references(sys.argv[1]), sys.argv[2], workers=1, progress=Crash(), checkpoint_seconds=0.0,
         **OPTIONS)
"""


def test_resume_after_a_hard_crash(refs, single_run, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "crashed.h5"
    root = Path(__file__).resolve().parents[2]
    folder = refs[0].path.parent
    done = subprocess.run([sys.executable, "-c", _CRASH, str(folder), str(out)], cwd=root, timeout=120)
    assert done.returncode == 9
    assert not out.exists() and store.partial_path(out).is_file()
    summary = generate(refs, out, workers=1, resume=True, **OPTIONS)
    assert summary.resumed_references >= 1
    assert_same_cache(out, single_run[0])


# --- VIPNet's reference lists (--refs-list) ---------------------------------------------------------------


def _authors_lists(tmp_path):
    """A KADIS-like folder where type 27 succeeds on scenes and fails on noise, and the two list files:
    main = [scene_a, noise_b]; walk = main + [noise_c, scene_d, scene_e, scene_f] (the authors' walk list
    begins with the main list)."""
    from tests.distort.images import synthetic_scene

    folder = tmp_path / "kadis" / "ref_imgs"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    scene = synthetic_scene(192 * 2, 256 * 2)
    names = ["scene_a.png", "noise_b.png", "noise_c.png", "scene_d.png", "scene_e.png", "scene_f.png"]
    for k, name in enumerate(names):
        if name.startswith("scene"):
            pixels = scene[k * 9 : k * 9 + 192, k * 13 : k * 13 + 256]
        else:
            pixels = rng.integers(0, 256, (192, 256, 3), dtype=np.uint8)
        Image.fromarray(np.ascontiguousarray(pixels)).save(folder / name)
    main, walk = tmp_path / "dataset_ref_img.csv", tmp_path / "dataset_ref_img_140k.csv"
    main.write_text("img_ref\n" + "\n".join(names[:2]) + "\n", encoding="utf-8")
    walk.write_text("img_ref\n" + "\n".join(names) + "\n", encoding="utf-8")
    return tmp_path / "kadis", main, walk


@pytest.mark.parametrize("workers", [1, 2])
def test_refs_lists_walk_type_27_until_the_target_succeeds(tmp_path, workers):
    from iqa_cli.distort.refs import authors_reference_lists

    root, main, walk = _authors_lists(tmp_path)
    references, main_count = authors_reference_lists(root, main, walk)
    assert main_count == 2 and [r.name for r in references][:3] == ["scene_a", "noise_b", "noise_c"]
    out = tmp_path / "set.h5"
    summary = generate(
        references, out, types=[1, 27], levels=[2, 3], size=(256, 192), workers=workers, main_count=main_count,
        walk_target=2, splits=0,
    )  # fmt: skip
    with open_cache(out) as cache:
        names = sorted(str(n) for n in cache.names)
    # type 1 on the main list only; type 27 on scene_a, then noise_b and noise_c fail, scene_d is the
    # second success and the walk stops: scene_e and scene_f are never distorted.
    expected = sorted(
        [f"{ref}_01_{lv:02d}.bmp" for ref in ("scene_a", "noise_b") for lv in (2, 3)]
        + [f"{ref}_27_{lv:02d}.bmp" for ref in ("scene_a", "scene_d") for lv in (2, 3)]
    )
    assert names == expected
    assert summary.walk_succeeded == 2 and summary.not_applicable == 2  # noise_b and noise_c for type 27


def test_refs_lists_are_checked(tmp_path):
    from iqa_cli.distort.refs import authors_reference_lists

    root, main, walk = _authors_lists(tmp_path)
    walk.write_text("img_ref\nnoise_b.png\nscene_a.png\n", encoding="utf-8")
    with pytest.raises(DataError, match="must begin with the 2 references of dataset_ref_img.csv"):
        authors_reference_lists(root, main, walk)
    main.write_text("name\nscene_a.png\n", encoding="utf-8")
    with pytest.raises(DataError, match="expected an 'img_ref' column"):
        authors_reference_lists(root, main)
    main.write_text("img_ref\nscene_a.png\nmissing.png\n", encoding="utf-8")
    with pytest.raises(DataError, match="reference image 'missing.png' of the reference list not found"):
        authors_reference_lists(root, main)
    main.write_text("img_ref\nscene_a.png\nnoise_b.png\n", encoding="utf-8")
    refs, count = authors_reference_lists(root, main)
    with pytest.raises(ConfigError, match="run it unsharded"):
        generate(refs, tmp_path / "x.h5", types=[27], shard="1/2", main_count=count, walk_target=1)


def test_the_authors_published_lists_read_as_their_generator_needs():
    from pathlib import Path

    from iqa_cli.distort.refs import read_reference_list

    folder = Path(__file__).resolve().parents[2].parent / "shared" / "authors-data" / "vipnet"
    if not (folder / "dataset_ref_img_140k.csv").is_file():
        pytest.skip(f"the authors' VIPNet lists are not in {folder}")
    main = read_reference_list(folder / "dataset_ref_img.csv")
    walk = read_reference_list(folder / "dataset_ref_img_140k.csv")
    assert (len(main), len(walk)) == (40_000, 139_999) and walk[: len(main)] == main


def test_prepare_distorted_cli_takes_the_reference_lists(tmp_path):
    from typer.testing import CliRunner

    from iqa_cli.cli.main import app

    root, main, walk = _authors_lists(tmp_path)
    args = ["prepare", "distorted", "--refs", str(root), "--out", str(tmp_path / "d.h5"), "--types", "1,27"]
    args += ["--levels", "2,3", "--size", "256x192", "--splits", "0", "--workers", "1", "--json"]
    result = CliRunner().invoke(
        app, [*args, "--refs-list", str(main), "--refs-list-27", str(walk), "--walk-target", "2"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["count"] == 8 and summary["walk_succeeded"] == 2
    alone = CliRunner().invoke(app, [*args, "--refs-list-27", str(walk)])
    assert alone.exit_code != 0 and "give the first with --refs-list too" in alone.output
