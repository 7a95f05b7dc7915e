"""A cluster node whose locale is not UTF-8: image names that are not ASCII.

Without UTF-8 mode, Python's file and stream encodings follow the locale: ASCII in the C locale with
`PYTHONUTF8=0`, Latin-1 under glibc's `LANG=en_US`. There `iqa` trained a split and then failed
writing the test predictions (`'ascii' codec can't encode`), refused a `prepare custom` whose CSV lists
`café_写真_*.png` ("image listed in scores.csv is missing"), printed no result table (a dagger in a
footnote), and wrote `iqa predict`'s CSV names as mojibake (`cafÃ©`)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from PIL import Image

from tests.adversarial.helpers import run_iqa
from tests.train.caches import write_folder

ASCII_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "PYTHONIOENCODING": ""}
PREFIX = "café_写真_"


def _unicode_folder(tmp_path: Path) -> Path:
    plain = write_folder(tmp_path / "plain", n=24)
    folder = tmp_path / "photos"
    folder.mkdir()
    rows = list(csv.reader((plain / "scores.csv").open(encoding="utf-8")))
    with (folder / "scores.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(rows[0])
        for name, score in rows[1:]:
            shutil.copy(plain / name, folder / f"{PREFIX}{name}")
            writer.writerow([f"{PREFIX}{name}", score])
    return folder


def test_non_ascii_image_names_in_an_ascii_locale(tmp_path):
    folder = _unicode_folder(tmp_path)
    env = {**ASCII_LOCALE, "IQA_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    cache = tmp_path / "uni.h5"
    done = run_iqa(
        "-q", "prepare", "custom", "--root", folder, "--out", cache, "--splits", "1", "--higher-better", env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    enhanced = tmp_path / "enhanced"  # another tool's output, found by the cache's names
    enhanced.mkdir()
    for image in (tmp_path / "plain").glob("*.png"):
        Image.open(image).rotate(180).save(enhanced / f"{PREFIX}{image.name}")
    done = run_iqa("-q", "prepare", "enhance", cache, "--enhanced-root", enhanced, "--no-selection", env=env)
    assert done.returncode == 0, done.stderr[-2000:]

    run = tmp_path / "run"
    args = ["train", "vtiqa", "--tiny", "--device", "cpu", "--data", cache, "--epochs", "1", "--split", "0"]
    done = run_iqa(*args, "--select-on", "test", "--out", run, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "random_0" in done.stdout  # the result table, footnotes and all
    tested = list(csv.DictReader((run / "split-random_0" / "test_predictions.csv").open(encoding="utf-8")))
    assert tested and all(row["name"].startswith(PREFIX) for row in tested)

    scores = tmp_path / "scores.csv"
    done = run_iqa("predict", "vtiqa", "--weights", run, "--device", "cpu", folder, "--csv", scores, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(scores.open(encoding="utf-8")))
    assert len(rows) == 24 and all(Path(row["path"]).name.startswith(PREFIX) for row in rows)
    done = run_iqa("-q", "predict", "vtiqa", "--weights", run, "--device", "cpu", folder, "--json", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(Path(row["path"]).name.startswith(PREFIX) for row in json.loads(done.stdout)["predictions"])
