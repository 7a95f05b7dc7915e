"""Figures (training curves, prediction scatter, per-type bars, score histogram, the cross matrix) and
evaluating one model on several datasets."""

from __future__ import annotations

import csv
import json

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from iqa_cli.cli import eval as eval_cli
from iqa_cli.cli.main import app
from iqa_cli.home import data_dir, runs_dir
from tests.train.caches import make_cache

runner = CliRunner()
FAST = ["--tiny", "--freeze-epochs", "0", "--optimizer", "adamw", "--lr", "0.002", "--batch-size", "8"]
FAST += ["--dropout", "0", "--device", "cpu", "--epochs", "2"]
FAST += ["--val-fraction", "0.2"]  # a validation part of at least 3 images (a correlation needs 3)


def _png(path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.load()
        return image.size


def test_figures_cross_lists_and_the_matrix(tmp_path, monkeypatch):
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    make_cache("other", tmp_path / "other", data_dir() / "other.h5", n=20, seed=3)
    for name in ("mini", "other"):
        assert runner.invoke(app, ["train", "vtiqa", *FAST, "--data", name, "--name", f"r-{name}"]).exit_code == 0
    curves = runs_dir() / "r-mini" / "split-random_0" / "curves.png"
    width, height = _png(curves)
    assert width > 500 and height > 200

    # the scatter's points are the per-image predictions (captured where the figure is drawn)
    drawn = {}
    real_scatter = eval_cli.__dict__.get("scatter")
    assert real_scatter is None  # imported inside the helper
    import iqa_cli.plots as plots

    original = plots.scatter

    def capture(path, panels, **kwargs):
        drawn["panels"] = panels
        return original(path, panels, **kwargs)

    monkeypatch.setattr(plots, "scatter", capture)
    scatter_png, table = tmp_path / "scatter.png", tmp_path / "per_image.csv"
    result = runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--plot", str(scatter_png), "--per-image",
                                 str(table), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert _png(scatter_png)[0] > 300
    with open(table, encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    panel = drawn["panels"][0]
    assert np.allclose(panel["pred"], [float(r["prediction"]) for r in rows])
    assert np.allclose(panel["label"], [float(r["label"]) for r in rows])

    hist = tmp_path / "hist.svg"
    assert runner.invoke(app, ["prepare", "inspect", "mini", "--plot", str(hist)]).exit_code == 0
    assert hist.read_text(encoding="utf-8").lstrip().startswith("<?xml")

    # one model, several datasets
    many = runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--cross", "all", "--device", "cpu", "--json"])
    assert many.exit_code == 0, many.output
    reports = json.loads(many.stdout)
    assert sorted(r["dataset"] for r in reports) == ["mini", "other"] and all(r["cross"] for r in reports)
    # `--cross all` includes the training dataset itself: those rows say they hold its training images
    own = {r["dataset"]: any(row.get("includes_training_images") for row in r["results"]) for r in reports}
    assert own == {"mini": True, "other": False}
    # ... and its --csv and --per-image hold every dataset's rows (they used to be skipped without a word)
    metrics_csv, images_csv = tmp_path / "cross.csv", tmp_path / "cross_images.csv"
    args = ["eval", "vtiqa", "--data", "mini", "--cross", "other,mini", "--device", "cpu", "--csv", str(metrics_csv)]
    written = runner.invoke(app, [*args, "--per-image", str(images_csv)])
    assert written.exit_code == 0, written.output
    with open(metrics_csv, encoding="utf-8") as f:
        rows = [(r["dataset"], r["split"], r["includes_training_images"]) for r in csv.DictReader(f)]
    assert rows == [("other", "all", ""), *[("other", s, "") for s in ("median", "mean", "std")],
                    ("mini", "all", "True"), *[("mini", s, "") for s in ("median", "mean", "std")]]  # fmt: skip
    with open(images_csv, encoding="utf-8") as f:
        counts = {name: 0 for name in ("mini", "other")}
        for row in csv.DictReader(f):
            counts[row["dataset"]] += 1
    assert counts == {"other": 20, "mini": 32}

    # the train x test matrix
    heat, table_csv = tmp_path / "matrix.png", tmp_path / "matrix.csv"
    result = runner.invoke(app, ["eval", "vtiqa", "--matrix", "--data", "mini,other", "--plot", str(heat), "--csv",
                                 str(table_csv), "--device", "cpu", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    matrix = json.loads(result.stdout)
    assert matrix["datasets"] == ["mini", "other"] and len(matrix["matrix"]) == 2
    kinds = {(c["trained_on"], c["tested_on"]): c["kind"] for c in matrix["cells"]}
    assert kinds[("mini", "mini")] == "intra" and kinds[("mini", "other")] == "cross"
    assert not any(c.get("includes_training_images") for c in matrix["cells"])  # the diagonal is intra
    assert all(v is not None for row in matrix["matrix"] for v in row)
    assert _png(heat)[0] > 200 and table_csv.read_text(encoding="utf-8").splitlines()[0].startswith("trained on")
    text = runner.invoke(app, ["eval", "vtiqa", "--matrix", "--data", "mini,other", "--device", "cpu"])
    assert text.exit_code == 0 and "other" in text.stdout and "§" not in text.stdout
    # A run kept on its own test part made an optimistic diagonal cell that looked like the others.
    on_test = [a for a in FAST if a not in ("--val-fraction", "0.2")] + ["--select-on", "test"]
    chosen_on_test = ["train", "vtiqa", *on_test, "--data", "other", "--name", "r-other-test"]
    assert runner.invoke(app, chosen_on_test).exit_code == 0
    marked = runner.invoke(app, ["eval", "vtiqa", "--matrix", "--data", "mini,other", "--device", "cpu"])
    rows = {line.split("│")[1].strip(): line for line in marked.stdout.splitlines() if line.count("│") == 4}
    assert "§" not in rows["mini"] and rows["other"].count("§") == 1, marked.stdout
    assert "§ kept model chosen on its own test part" in marked.stdout
    cells = json.loads(runner.invoke(app, ["eval", "vtiqa", "--matrix", "--data", "mini,other", "--json"]).stdout)
    selected = {(c["trained_on"], c["tested_on"]): c["selected_on"] for c in cells["cells"]}
    assert selected[("other", "other")] == "test" and selected[("mini", "mini")] == "val"
    for extra in (["--weights", "r-mini"], ["--split", "0"], ["--by-type"], ["--per-image", str(tmp_path / "p.csv")]):
        refused = runner.invoke(app, ["eval", "vtiqa", "--matrix", "--data", "mini,other", *extra])
        assert refused.exit_code == 2 and f"{extra[0]}" in refused.output and "--matrix" in refused.output
        assert "evaluating" not in refused.output  # refused before the work, not ignored
    missing = runner.invoke(app, ["eval", "vtiqa", "--matrix", "--data", "mini,nothing", "--device", "cpu"])
    assert missing.exit_code != 0 and "no vtiqa run trained on 'nothing'" in missing.output
    assert "must end in .png or .svg" in runner.invoke(app, ["eval", "vtiqa", "--data", "mini", "--plot",
                                                             str(tmp_path / "x.jpg")]).output  # fmt: skip


def test_a_type_without_a_correlation_gets_no_bar_and_says_so(tmp_path, monkeypatch):
    """A type of 2 images (SRCC null, or NaN) was drawn as a bar at 0 (None) or as NaN: a model with SRCC 0
    there, by the look of it. It now has no bar and its label says there is none."""
    from iqa_cli import plots

    drawn = {}

    def keep(fig, path):
        axes = fig.axes[0]
        drawn["labels"] = [tick.get_text() for tick in axes.get_xticklabels()]
        drawn["heights"] = [patch.get_height() for patch in axes.patches]
        return path  # the figure is read here, not written

    monkeypatch.setattr(plots, "_save", keep)
    by_type = {
        "01 Gaussian blur": {"n": 6, "srcc": 0.5, "plcc": 0.4},
        "09 JPEG2000": {"n": 2, "srcc": None, "plcc": float("nan")},
    }
    plots.by_type_bars(tmp_path / "bars.png", by_type, title="t")
    assert drawn["labels"] == ["01 Gaussian blur", "09 JPEG2000 (n=2: none)"]
    heights = drawn["heights"]  # SRCC bars, then PLCC bars
    assert heights[0] == 0.5 and heights[2] == 0.4 and np.isnan(heights[1]) and np.isnan(heights[3])
