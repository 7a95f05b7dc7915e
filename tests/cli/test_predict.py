"""`iqa predict vtiqa`: the user's own image files of any size and format, batched, with broken files
stopping the run in one line or skipped with --skip-bad."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.home import data_dir
from tests.data.imagefolder import smooth_image
from tests.train.caches import make_cache

runner = CliRunner()
FAST = ["--tiny", "--freeze-epochs", "0", "--optimizer", "adamw", "--lr", "0.002", "--batch-size", "8"]
FAST += ["--dropout", "0", "--device", "cpu", "--epochs", "1"]
FAST += ["--val-fraction", "0.2"]  # a validation part of at least 3 images (a correlation needs 3)


@pytest.fixture
def weights(tmp_path):
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "mini", "--out", str(run)])
    assert result.exit_code == 0, result.output
    return run / "split-random_0" / "best.safetensors"


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    Image.fromarray(smooth_image(300, 200, 1)).save(folder / "a.jpg", quality=90)
    Image.fromarray(smooth_image(64, 96, 2)).save(folder / "b.png")
    Image.fromarray(smooth_image(120, 80, 3)).save(folder / "nested" / "c.bmp")
    Image.fromarray(smooth_image(40, 30, 4)).convert("L").save(folder / "nested" / "d.tiff")
    (folder / "notes.txt").write_text("not an image, and not an image suffix: left out, with a note", encoding="utf-8")
    Image.fromarray(smooth_image(40, 30, 5)).save(folder / "nested" / "e.gif")  # a format predict does not list
    return folder


def predict(*args: str):
    return runner.invoke(app, ["predict", "vtiqa", *args, "--device", "cpu"])


def test_scores_a_folder_in_batches_as_json_and_csv(weights, photos, tmp_path):
    table = tmp_path / "scores.csv"
    result = predict("--weights", str(weights), str(photos), "--batch-size", "3", "--json", "--csv", str(table))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    found = {p["path"].split("photos/")[-1]: p for p in report["predictions"]}
    assert sorted(found) == ["a.jpg", "b.png", "nested/c.bmp", "nested/d.tiff"]
    assert (found["a.jpg"]["width"], found["a.jpg"]["height"]) == (300, 200)
    scores = np.array([p["score"] for p in report["predictions"]])
    assert np.isfinite(scores).all() and report["skipped"] == [] and report["resize"] is None  # cache at own size
    assert f"note: {photos}: 2 file(s) left out, not named as images (.gif: 1, .txt: 1)" in result.stderr
    rows = list(csv.DictReader(table.open()))
    # Every float32 score exactly: 6 significant digits tied distinct scores (100 of 10,000 on the 1-5 scale)
    assert np.array_equal(np.float32([float(r["score"]) for r in rows]), np.float32(scores))
    # Batching does not change a score: one image at a time gives the same numbers.
    single = predict("--weights", str(weights), str(photos), "--batch-size", "1", "--json")
    assert [p["score"] for p in json.loads(single.stdout)["predictions"]] == pytest.approx(list(scores), abs=1e-5)
    table_output = predict("--weights", str(weights), str(photos / "a.jpg"))
    assert table_output.exit_code == 0 and "a.jpg" in table_output.stdout and "300x200" in table_output.stdout


def test_hidden_folders_and_macos_shadows_are_no_photos_to_score(photos):
    """`iqa predict vtiqa /media/usb` scored the deleted photos in `.Trash-1000/` and a viewer's small
    copies in `.thumbnails/`: only hidden file names were left out, not hidden folders."""
    from iqa_cli.train.predict import expand_inputs

    for extra in [".Trash-1000/files/deleted.jpg", "nested/.thumbnails/c.jpg", "__MACOSX/nested/c.jpg"]:
        (photos / extra).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(smooth_image(40, 30, 6)).save(photos / extra)
    found = [p.relative_to(photos).as_posix() for p in expand_inputs([photos])]
    assert found == ["a.jpg", "b.png", "nested/c.bmp", "nested/d.tiff"]
    assert expand_inputs([photos / ".Trash-1000"]) == [photos / ".Trash-1000/files/deleted.jpg"]  # asked for


def test_an_image_named_more_than_once_is_scored_once(weights, photos, monkeypatch):
    """`iqa predict vtiqa a.jpg ./a.jpg photos/` scored a.jpg three times: three rows of one image in the
    table, weighed three times in any mean taken from it."""
    monkeypatch.chdir(photos.parent)
    result = predict("--weights", str(weights), "photos/a.jpg", "./photos/a.jpg", str(photos), "--json")
    assert result.exit_code == 0, result.output
    paths = [Path(p["path"]) for p in json.loads(result.stdout)["predictions"]]
    assert [p.name for p in paths] == ["a.jpg", "b.png", "c.bmp", "d.tiff"]
    assert "1 image(s) named more than once are scored once" in " ".join(result.stderr.split())


def test_a_folder_s_pipes_devices_and_broken_links_named_as_images_are_said_left_out(weights, tmp_path):
    """A FIFO, a link to /dev/zero and a broken link named like photos were left out without a word."""
    import os

    folder = tmp_path / "odd"
    folder.mkdir()
    Image.fromarray(smooth_image(64, 48, 1)).save(folder / "a.jpg", quality=90)
    os.mkfifo(folder / "pipe.jpg")
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "gone.jpg").symlink_to(folder / "missing.jpg")
    result = predict("--weights", str(weights), str(folder), "--json")
    assert result.exit_code == 0, result.output
    assert [Path(p["path"]).name for p in json.loads(result.stdout)["predictions"]] == ["a.jpg"]
    line = " ".join(result.stderr.split())
    assert "3 entries named as images left out, not regular files (a pipe, device or broken link)" in line
    assert "gone.jpg, pipe.jpg, zero.png" in line


def test_a_broken_image_stops_in_one_line_or_is_skipped(weights, photos):
    broken = photos / "broken.jpg"
    data = (photos / "a.jpg").read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    stopped = predict("--weights", str(weights), str(photos))
    errors = [line for line in stopped.output.splitlines() if line.startswith("error:")]
    assert stopped.exit_code != 0 and len(errors) == 1 and "broken.jpg" in errors[0]
    assert "Traceback" not in stopped.output
    skipped = predict("--weights", str(weights), str(photos), "--skip-bad", "--json")
    assert skipped.exit_code == 0, skipped.output
    report = json.loads(skipped.stdout)
    assert len(report["predictions"]) == 4 and [s["path"].endswith("broken.jpg") for s in report["skipped"]] == [True]
    assert "skipped:" in skipped.stderr and "broken.jpg" in skipped.stderr


def test_a_skipped_one_pixel_image_is_named(weights, photos):
    """Every skip names its file: an image too small to score said only 'image too small'."""
    Image.new("RGB", (1, 40)).save(photos / "line.png")
    report = predict("--weights", str(weights), str(photos), "--skip-bad")
    assert report.exit_code == 0, report.output
    assert "skipped: " in report.stderr and "line.png: image is only 1x40 pixels" in report.stderr


def test_bad_inputs(weights, tmp_path):
    missing = predict("--weights", str(weights), str(tmp_path / "nothing.jpg"))
    assert missing.exit_code != 0 and "no such file or folder" in missing.output
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)  # it exists: "no such file" misled, and opening it would wait for a writer for ever
    piped = predict("--weights", str(weights), str(pipe))
    assert piped.exit_code == 65 and "not a regular file (a pipe, socket or device)" in piped.output
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no image files" in predict("--weights", str(weights), str(empty)).output
    assert "not found" in predict("--weights", str(tmp_path / "w.pt"), str(weights)).output


def test_large_jpegs_decode_reduced_in_worker_processes_with_the_same_scores(weights, tmp_path):
    """Images are decoded in worker processes, in input order; a JPEG much larger than the method's views
    decodes at a reduced DCT scale (both sides still at least DRAFT_GAP x the largest view side), and
    its reported size is the file's own."""
    from iqa_cli.data.decode import DecodeJob, decode_job
    from iqa_cli.data.resize import DRAFT_GAP
    from iqa_cli.train.recipes import get_recipe
    from iqa_cli.train.trainer import resolve_config

    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(10):
        Image.fromarray(smooth_image(160 + 8 * k, 120, k)).save(folder / f"p{k:02d}.png")
    big = smooth_image(1600, 1200, 99)
    Image.fromarray(big).save(folder / "zz_big.jpg", quality=92)
    params = resolve_config(get_recipe("vtiqa"), tiny=True, config_file=None, overrides={}).params
    bound = get_recipe("vtiqa").view_bound(params)
    reduced = decode_job(DecodeJob(str(folder / "zz_big.jpg"), reduce_to=(bound, bound)))
    assert reduced.shape[0] < 1200 and min(reduced.shape[:2]) >= DRAFT_GAP * bound
    assert decode_job(DecodeJob(str(folder / "p00.png"), reduce_to=(8, 8))).shape == (120, 160, 3)  # PNG: whole

    one = predict("--weights", str(weights), str(folder), "-j", "1", "--json")
    two = predict("--weights", str(weights), str(folder), "-j", "2", "--json")
    assert one.exit_code == 0 and two.exit_code == 0, (one.output, two.output)
    first, second = json.loads(one.stdout)["predictions"], json.loads(two.stdout)["predictions"]
    assert [p["path"] for p in first] == [p["path"] for p in second] == sorted(p["path"] for p in first)
    assert [p["score"] for p in first] == [p["score"] for p in second]
    assert (first[-1]["width"], first[-1]["height"]) == (1600, 1200)


def test_an_output_path_that_cannot_be_written_is_refused_before_any_image_is_scored(weights, photos, tmp_path):
    result = predict("--weights", str(weights), str(photos), "--csv", str(tmp_path))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: --csv: {tmp_path} is a folder; give a file name"]
    blocker = tmp_path / "a_file"
    blocker.write_text("", encoding="utf-8")
    result = predict("--weights", str(weights), str(photos), "--csv", str(blocker / "sub" / "scores.csv"))
    assert result.exit_code == 2 and "is a file, so" in result.output and "scoring" not in result.output
    made = predict("--weights", str(weights), str(photos), "--csv", str(tmp_path / "new" / "dir" / "s.csv"))
    assert made.exit_code == 0 and (tmp_path / "new" / "dir" / "s.csv").is_file()  # missing folders are made


def test_outputs_never_replace_an_input_image_a_model_or_a_cache(weights, photos):
    """`iqa predict ... --csv photos/a.jpg` replaced the photo with the score table, and `iqa eval
    --per-image best.safetensors` the trained model, exit 0."""
    photo, model, cache = photos / "a.jpg", weights, data_dir() / "mini.h5"
    kept = {path: path.read_bytes() for path in (photo, model, cache)}
    line = predict("--weights", str(weights), str(photos), "--csv", str(photo)).output.strip()
    assert line == (
        f"error: --csv: {photo} exists and is a JPEG image, not a text file as this option writes; it is not "
        "replaced (give another name, or remove it first)"
    )
    score_list = photos / "scores.csv"  # a dataset's score list is no table of ours either
    score_list.write_text("name,score\na.jpg,3.5\n", encoding="utf-8")
    kept[score_list] = score_list.read_bytes()
    refused = predict("--weights", str(weights), str(photos / "a.jpg"), "--csv", str(score_list))
    assert refused.exit_code == 2 and "is a text file this option did not write" in refused.output
    for option, target in (("--per-image", model), ("--csv", cache), ("--csv", score_list)):
        result = runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--weights", str(model), option, str(target)])
        assert result.exit_code == 2 and "it is not replaced" in result.output, result.output
    assert all(path.read_bytes() == data for path, data in kept.items())


def test_an_exif_rotated_photo_is_scored_upright_as_prepare_stores_it(weights, tmp_path):
    """A camera JPEG stored sideways with EXIF orientation 6 scores as its upright pixels do; the decode
    jobs of `iqa predict` used to default to "upright" and skip the file's orientation."""
    upright = smooth_image(90, 60, 2)  # 90 wide, 60 high once turned
    folder = tmp_path / "exif"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # the viewer turns the stored frame 90 degrees clockwise
    stored = np.rot90(upright, k=1)  # the frame a camera held on its side would store
    Image.fromarray(np.ascontiguousarray(stored)).save(folder / "turned.png", exif=exif)
    Image.fromarray(upright).save(folder / "upright.png")
    result = predict("--weights", str(weights), str(folder), "--json")
    assert result.exit_code == 0, result.output
    found = {p["path"].rsplit("/", 1)[-1]: p for p in json.loads(result.stdout)["predictions"]}
    assert (found["turned.png"]["width"], found["turned.png"]["height"]) == (90, 60)
    assert found["turned.png"]["score"] == pytest.approx(found["upright.png"]["score"], abs=1e-6)


def test_predict_on_files_equals_eval_on_their_cache(weights, tmp_path):
    """The scoring views `iqa predict` makes from files are the ones `iqa eval` makes from a cache of the
    same images (stored at their own size): the scores agree per image."""
    _predict_equals_eval(weights, "mini", tmp_path)  # the training cache's own images, kept at original size


def _first_png(folder: Path) -> str:
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".png")[0]


def _predict_equals_eval(weights: Path, cache: str, tmp_path: Path):
    """`iqa predict` of the image folder of cache `cache` (tmp_path / cache) against `iqa eval --cross cache
    --per-image`: each image's two scores agree. Returns predict's result and eval's scores by file name."""
    table, per_image = tmp_path / "p.csv", tmp_path / "e.csv"
    result = predict("--weights", str(weights), str(tmp_path / cache), "--csv", str(table))
    assert result.exit_code == 0, result.output
    evaluated = runner.invoke(app, ["eval", "vtiqa", "--weights", str(weights), "--cross", cache, "--device", "cpu",
                                    "--per-image", str(per_image)])  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    predicted = {Path(r["path"]).name: float(r["score"]) for r in csv.DictReader(table.open())}
    scored = {Path(r["name"]).name: float(r["prediction"]) for r in csv.DictReader(per_image.open())}
    assert sorted(predicted) == sorted(scored) and len(scored) == 32
    assert max(abs(predicted[k] - scored[k]) for k in scored) < 2e-5  # float32 scores from two batchings
    return result, scored


def test_a_model_trained_on_a_resized_cache_scores_files_stored_as_it_trained(tmp_path):
    """A model trained on a cache stored at `--size short:S` (SPAQ's, CID2013's and RBID's default) saw views
    made from the resized images; `iqa predict` made them from the files at their own size, so its scores
    of the model's own images were not those of `iqa eval`. Files are now resized as that cache stored them."""
    import iqa_cli

    make_cache("small", tmp_path / "small", data_dir() / "small.h5", resize="short:40")
    run = tmp_path / "run"
    trained = runner.invoke(app, ["train", "vtiqa", *FAST, "--data", "small", "--out", str(run)])
    assert trained.exit_code == 0, trained.output
    weights = run / "split-random_0" / "best.safetensors"
    result, scored = _predict_equals_eval(weights, "small", tmp_path)
    assert "images are resized as the model's training cache stored its images (short:40)" in result.stderr
    said = predict("--weights", str(weights), str(tmp_path / "small" / _first_png(tmp_path / "small")), "--json")
    assert json.loads(said.stdout)["resize"] == "short:40"
    scorer = iqa_cli.load(str(weights), device="cpu")  # the Python scorer: files and arrays alike
    name = sorted(scored)[0]
    image = np.asarray(Image.open(tmp_path / "small" / name).convert("RGB"))
    assert float(scorer(str(tmp_path / "small" / name))[0]) == pytest.approx(scored[name], abs=2e-5)
    assert float(scorer(image)[0]) == pytest.approx(scored[name], abs=2e-5)
    # A 1x1 file is still refused for its own size, though the policy would store it at 40x40.
    Image.fromarray(np.zeros((1, 1, 3), dtype=np.uint8)).save(tmp_path / "dot.png")
    assert "image is only 1x1 pixels" in predict("--weights", str(weights), str(tmp_path / "dot.png")).output
    with pytest.raises(Exception, match="only 1x1 pixels"):
        scorer(str(tmp_path / "dot.png"))


def test_tied_half_precision_scores_are_said(weights, tmp_path):
    """`--amp bf16` rounds every score to bf16's coarse steps: 32 photos got 18 distinct scores, and a user
    ranking them had no word of the ties (`iqa eval` says so for its metrics)."""
    import iqa_cli

    folder = tmp_path / "mini"
    result = predict("--weights", str(weights), str(folder), "--amp", "bf16", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    scores = [p["score"] for p in report["predictions"]]
    assert len(set(scores)) < len(scores)  # bf16 ties this model's scores
    said = f"bf16 scoring gave {len(set(scores))} distinct scores for {len(scores)} images: tied ones cannot be"
    assert any(note.startswith(said) for note in report["notes"]), report["notes"]
    assert said in " ".join(result.stderr.split())
    exact = json.loads(predict("--weights", str(weights), str(folder), "--amp", "off", "--json").stdout)
    assert not any("distinct scores" in note for note in exact["notes"])
    scorer = iqa_cli.load(str(weights), device="cpu", amp="bf16")
    with pytest.MonkeyPatch.context() as patch:
        import logging

        said_by_scorer: list[str] = []
        patch.setattr(logging.getLogger("iqa_cli.api"), "warning", said_by_scorer.append)
        scorer(str(folder))
    assert said_by_scorer and said_by_scorer[0].startswith("bf16 scoring gave")


def test_a_lost_signal_stops_the_scoring_at_the_next_batch(weights, photos, monkeypatch):
    """As `iqa eval`: a SIGTERM whose exception was discarded must not let every batch be scored."""
    from iqa_cli.train import predict as predict_module
    from tests.signals import lose_a_signal

    original = predict_module.score_views
    calls = []

    def losing_a_signal(*args, **kwargs):
        calls.append(1)
        lose_a_signal("SIGTERM")
        return original(*args, **kwargs)

    monkeypatch.setattr(predict_module, "score_views", losing_a_signal)
    result = predict("--weights", str(weights), str(photos), "--batch-size", "1", "--json")
    assert result.exit_code == 143 and result.stdout == "", result.output
    assert "terminated (SIGTERM)" in result.stderr and len(calls) == 1


def test_multi_frame_and_transparent_images_are_said_read_in_part(weights, tmp_path):
    """A multi-page TIFF was scored on its first page and a transparent PNG on the colours under its
    alpha, with no word; an opaque image with an alpha band loses nothing and is not mentioned."""
    folder = tmp_path / "own"
    folder.mkdir()
    pages = [Image.fromarray(smooth_image(64, 48, k)) for k in range(2)]
    pages[0].save(folder / "scan.tif", save_all=True, append_images=pages[1:])
    rgba = np.dstack([smooth_image(64, 48, 3), np.full((48, 64), 255, np.uint8)])
    Image.fromarray(rgba).save(folder / "opaque.png")
    rgba[:8] = 0
    Image.fromarray(rgba).save(folder / "cutout.png")
    result = predict("--weights", str(weights), str(folder), "--json")
    assert result.exit_code == 0, result.output
    notes = json.loads(result.stdout)["notes"]
    assert len(notes) == 2 and f"e.g. {folder / 'scan.tif'}: 2): only the first frame is read" in notes[0]
    assert notes[1].startswith(f"1 image(s) have transparent pixels (e.g. {folder / 'cutout.png'})")
    said = " ".join(result.stderr.split())
    assert "only the first frame is read" in said and "their alpha is dropped" in said
    plain = predict("--weights", str(weights), str(folder / "opaque.png"), "--json")
    assert json.loads(plain.stdout)["notes"] == [] and "alpha" not in plain.stderr


def test_names_holding_control_characters_are_shown_escaped_on_one_line(weights, tmp_path):
    """A file name's escape sequence went raw to the terminal (it could recolour or erase earlier lines, a
    warning among them), its tab split a table row, its newline was flattened into a name that does not
    exist, and its two spaces into one. People now see `\\t`, `\\n`, `\\x1b`; JSON keeps the exact name."""
    folder = tmp_path / "odd"
    folder.mkdir()
    shown = "tab\tname\x1b[31mred.png"
    Image.fromarray(smooth_image(64, 48, 1)).save(folder / shown)
    (folder / "new\nline.jpg").write_bytes(b"not an image")
    (folder / "two  spaces.jpg").write_bytes(b"not an image")
    stopped = predict("--weights", str(weights), str(folder))
    assert stopped.exit_code != 0 and "\x1b" not in stopped.output, stopped.output
    assert stopped.stderr.splitlines()[-1].startswith("error: ") and "new\\nline.jpg: " in stopped.stderr
    table = predict("--weights", str(weights), str(folder), "--skip-bad")
    assert table.exit_code == 0 and "\x1b" not in table.output, table.output
    assert "tab\\tname\\x1b[31mred.png" in table.stdout
    assert "new\\nline.jpg: " in table.stderr and "two  spaces.jpg: " in table.stderr
    assert all(line.startswith(("[", "warning:", "skipped")) for line in table.stderr.splitlines()), table.stderr
    exact = json.loads(predict("--weights", str(weights), str(folder), "--skip-bad", "--json").stdout)
    assert [Path(p["path"]).name for p in exact["predictions"]] == [shown]
    assert sorted(Path(s["path"]).name for s in exact["skipped"]) == ["new\nline.jpg", "two  spaces.jpg"]


def test_scores_written_to_a_named_pipe_reach_its_reader(weights, photos, tmp_path):
    """`--csv FIFO` replaced the pipe by a regular file (and would have replaced /dev/null, as root)."""
    import threading

    fifo = tmp_path / "scores.fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text(encoding="utf-8")), daemon=True)
    reader.start()
    result = predict("--weights", str(weights), str(photos), "--csv", str(fifo), "--json")
    reader.join(timeout=30)
    assert result.exit_code == 0 and fifo.is_fifo(), result.output
    assert received and received[0].startswith("path,score") and len(received[0].splitlines()) == 5


def test_running_out_of_file_handles_is_no_bad_image_even_with_skip_bad(weights, photos, monkeypatch):
    """`--skip-bad` skipped an image the process could not open for want of file handles, as if the file
    were damaged, and scored the rest with exit 0."""
    from iqa_cli.data import decode

    original = decode.decode_image

    def out_of_handles(path, *args, **kwargs):
        if Path(path).name == "b.png":
            raise OSError(24, "Too many open files")
        return original(path, *args, **kwargs)

    monkeypatch.setattr(decode, "decode_image", out_of_handles)
    result = predict("--weights", str(weights), str(photos), "--skip-bad", "--json")
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.exit_code == 74 and len(errors) == 1 and "b.png: Too many open files" in errors[0], result.output
    assert result.stdout == ""
