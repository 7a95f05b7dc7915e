"""`iqa train aliqa`, `iqa eval aliqa` and `iqa al select` end to end on small real caches (tiny network):
the audited run folder, resumption between and within rounds, the clean pool, a learnable fixture,
choosing images to label by hand, and bad input giving one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.data.cache import open_cache
from iqa_cli.home import data_dir
from iqa_cli.train.data import make_parts
from tests.cli.options import without
from tests.cli.test_train import one_error_line
from tests.train.caches import make_cache, write_folder

runner = CliRunner()
# 32 images: 24 train (2 of them validation) / 8 test. A 50 % budget of the 22-image pool: 3 + 4 + 4.
FAST = ["--tiny", "--device", "cpu", "--budget", "50", "--epochs", "2", "--eval-period", "1", "--batch-size", "2"]
FAST += ["--val-fraction", "0.2"]  # a validation part of at least 3 images (a correlation needs 3)
COUNTS = [2, 3, 3]


@pytest.fixture(scope="module")
def single_thread():
    # Tiny networks gain nothing from a second thread, and lose much when the cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, single_thread):
    """One complete tiny run (3 rounds + fine-tune) in its own IQA_HOME, shared by the tests below."""
    home = tmp_path_factory.mktemp("aliqa_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IQA_HOME", str(home))
        cache = make_cache("mini", home / "src", data_dir() / "mini.h5")
        result = runner.invoke(app, ["train", "aliqa", *FAST, "--data", "mini", "--name", "whole", "--json"])
    assert result.exit_code == 0, result.output
    run = home / "runs" / "whole"
    return SimpleNamespace(
        home=home, cache=cache, run=run, split=run / "split-random_0", report=json.loads(result.stdout)
    )


def _selected(split: Path, r: int) -> dict:
    return json.loads((split / f"round-{r}" / "selected.json").read_text(encoding="utf-8"))


def _ctx_length(path: Path) -> int:
    with safe_open(str(path), "pt") as f:
        return int(f.get_tensor("prompt_learner0.ctx").shape[0])


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict


def test_the_run_folder_audits_every_round(trained):
    split = trained.split
    with open_cache(trained.cache) as cache:
        parts = make_parts(cache, "random_0", select_on="val", val_fraction=0.2, seed=0)
        names = list(cache.names)
    chosen = []
    for r, count in enumerate(COUNTS, start=1):
        record = _selected(split, r)
        assert record["round"] == r and record["count"] == count == len(record["indices"])
        assert record["names"] == [names[i] for i in record["indices"]]
        assert (split / f"round-{r}" / "best.safetensors").is_file()
        chosen.extend(record["indices"])
    assert _selected(split, 1)["uncertainty"].startswith("untrained CLIP")  # --tiny: random prompt scores
    assert "round-1/best.safetensors" in _selected(split, 2)["uncertainty"]
    # Selected from the pool (the training part less its validation part), never twice, never test/val.
    assert len(set(chosen)) == sum(COUNTS) and set(chosen) <= set(parts.train.tolist())
    assert json.loads((split / "labelled.json").read_text(encoding="utf-8"))["indices"] == chosen
    assert _ctx_length(split / "round-1" / "best.safetensors") == 4  # fresh n_ctx 4 prompts in round 1
    assert _ctx_length(split / "round-2" / "best.safetensors") == 8
    log = [json.loads(x) for x in (split / "fine-tune" / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {x["part"] for x in log} == {"val", "test"} and all(x["selected_on"] == "val" for x in log)
    assert "heads_plcc_srcc" in log[0]
    # As the authors' step scripts: the start weights (round 3's kept model) are evaluated before training,
    # and the first evaluation is compared with them; they stay the kept model unless beaten.
    assert log[0]["epoch"] == -1 and log[0]["event"] == "before training" and log[0]["part"] == "val"
    start = log[0]["heads_plcc_srcc"]
    later = [x["heads_plcc_srcc"] for x in log[1:] if x["part"] == "val"]
    improved = [x for x in log[1:] if x.get("improved")]
    assert all(x["heads_plcc_srcc"] > start for x in improved)
    result = json.loads((split / "fine-tune" / "result.json").read_text(encoding="utf-8"))
    if not any(v > start for v in later):
        assert result["best_epoch"] == -1  # nothing beat round 3: round 3's model is kept
    round3 = json.loads((split / "round-3" / "log.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert round3["epoch"] == -1 and round3["event"] == "before training"
    with np.load(split / "distances.npz") as saved:
        assert saved["distance"].shape == (5, 8, parts.train.size)  # tiny: 8 centroids; 5 repeats
        assert "stand-in" in str(saved["source"])
    final, tuned = _tensors(split / "best.safetensors"), _tensors(split / "fine-tune" / "best.safetensors")
    assert final.keys() == tuned.keys() and all(torch.equal(final[k], tuned[k]) for k in final)
    row = trained.report["splits"][0]
    assert row["n"] == parts.test.size and row["weights"] == str(split / "best.safetensors")


def test_eval_finds_the_final_model(trained, monkeypatch):
    monkeypatch.setenv("IQA_HOME", str(trained.home))
    result = runner.invoke(app, ["eval", "aliqa", "--data", "mini", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["results"][0]
    assert row["srcc"] == pytest.approx(trained.report["splits"][0]["srcc"], abs=1e-9)
    assert row["selected_on"] == "val"
    # The authors' headline metric (mean over the three heads) is reported next to head 2's.
    assert isinstance(row["heads_srcc"], float) and isinstance(row["heads_plcc"], float)
    assert row["heads_srcc"] == pytest.approx(trained.report["splits"][0]["heads_srcc"], abs=1e-9)


def test_resume_skips_finished_rounds_and_continues_the_interrupted_one(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_HOME", str(trained.home))
    cut = tmp_path / "cut"
    # Batch 2: round 1 (3 images) has 4 steps in 2 epochs, so step 5 is mid-way through round 2.
    env = {**os.environ, "IQA_HOME": str(trained.home), "IQA_DEBUG_SIGNAL_AT_STEP": "5", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "iqa_cli", "train", "aliqa", *FAST, "--data", "mini", "--out", str(cut)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 143, done.stderr
    assert f"--resume --out {cut}`" in done.stderr  # the run folder, not a round's
    split = cut / "split-random_0"
    assert (split / "round-1" / "result.json").is_file() and (split / "round-2" / "last.pt").is_file()
    assert not (split / "round-2" / "result.json").exists()
    resumed = runner.invoke(app, ["train", "aliqa", "--resume", "--out", str(cut)])
    assert resumed.exit_code == 0, resumed.output
    assert "round 1/3: finished before" in resumed.output  # skipped, not retrained
    assert f"resumed at epoch 1 step 5 from {split / 'round-2' / 'last.pt'}" in resumed.output
    for r in (1, 2, 3):
        assert _selected(split, r)["indices"] == _selected(trained.split, r)["indices"]
    a, b = _tensors(trained.split / "best.safetensors"), _tensors(split / "best.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_select_on_test_pools_the_whole_training_part(tmp_path, single_thread):
    cache = make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    out = tmp_path / "r"
    args = [*without(FAST, "--val-fraction"), "--epochs", "1", "--no-fine-tune", "--select-on", "test"]
    args += ["--data", "mini", "--out", str(out)]
    result = runner.invoke(app, ["train", "aliqa", *args])
    assert result.exit_code == 0, result.output
    with open_cache(cache) as data:
        train = set(data.split("random_0")["train"].tolist())
    split = out / "split-random_0"
    chosen = [i for r in (1, 2, 3) for i in _selected(split, r)["indices"]]
    assert [len(_selected(split, r)["indices"]) for r in (1, 2, 3)] == [3, 4, 4]  # of 24: 3 + int(4.8) + 4
    assert set(chosen) <= train and not (split / "fine-tune").exists()
    log = [json.loads(x) for x in (split / "round-3" / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {x["part"] for x in log} == {"test"}
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["selected_on"] == "test"


def test_the_recipe_learns_a_synthetic_distortion_fixture(tmp_path, single_thread):
    # Quality = noise strength (tests/train/fakes.py). 96 images: a pool of 65, 80 % budget = 11 + 20 + 20.
    # The tiny CLIP is random, so prompts alone learn little; the fine-tune step (all blocks of the tiny
    # towers) does the work, at a learning rate raised for the few steps a test can afford.
    # Measured: test SRCC 0.88 (24 test images, ~15 s of CPU on one thread).
    make_cache("mini96", tmp_path / "mini96", data_dir() / "mini96.h5", n=96)
    args = ["--tiny", "--device", "cpu", "--data", "mini96", "--budget", "80", "--epochs", "30", "--eval-period", "5"]
    args += ["--ft-lr-phases", "0:0.05", "--ft-batch-size", "8", "--out", str(tmp_path / "r"), "--json"]
    result = runner.invoke(app, ["train", "aliqa", *args])
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["splits"][0]
    assert row["n"] == 24 and row["srcc"] > 0.6, row


# -------------------------------------------------------------------------------------------- al select


def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_al_select_round_1_then_2_with_the_previous_round_model(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("IQA_HOME", str(trained.home))
    first = tmp_path / "next1.csv"
    result = runner.invoke(
        app, ["al", "select", "--data", "mini", "--tiny", "--device", "cpu", "--budget", "50", "--out", str(first)]
    )
    assert result.exit_code == 0, result.output
    rows = _rows(first)
    assert len(rows) == 4  # 50 % of the whole 32-image cache: round 1 takes len(arange(32 - 3.2, 32)) = 4
    assert [int(r["order"]) for r in rows] == [1, 2, 3, 4]
    scores = [float(r["combined_score"]) for r in rows]
    assert scores == sorted(scores)  # the image picked first at the top
    second = tmp_path / "next2.txt"
    weights = trained.split / "round-1" / "best.safetensors"
    args = ["al", "select", "--data", "mini", "--device", "cpu", "--budget", "50", "--round", "2"]
    args += ["--labelled", str(first), "--weights", str(weights), "--out", str(second), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["labelled"] == report["expected_labelled"] == 4 and report["count"] == 6  # int(0.2 * 32)
    names = second.read_text(encoding="utf-8").split()
    assert len(names) == 6 and not set(names) & {r["name"] for r in rows}
    assert names == [c["name"] for c in report["chosen"]]

    # The run itself names the same model: round 2 selects with its round-1 kept model (it was refused as
    # "neither a file nor a name in the weights store"; its final model is the fine-tuned one, never a round's).
    by_run = runner.invoke(app, [*args[:-5], "--weights", "whole", "--out", str(tmp_path / "by-run.txt"), "--json"])
    assert by_run.exit_code == 0, by_run.output
    assert json.loads(by_run.stdout)["chosen"] == report["chosen"]
    assert f"the kept model of round 1, split random_0: {weights}" in " ".join(by_run.stderr.split())
    round_one = runner.invoke(
        app, ["al", "select", "--data", "mini", "--weights", "whole", "--out", str(tmp_path / "r.txt")]
    )
    assert round_one.exit_code == 2 and "round 1 selects with zero-shot CLIP" in round_one.output

    # Round 2 without the names labelled so far chose among every image again, round 1's picks included.
    unlabelled = [a for a in args if a not in ("--labelled", str(first))]
    forgot = runner.invoke(app, [*unlabelled[:-3], "--out", str(tmp_path / "forgot.txt")])
    assert forgot.exit_code == 2 and "the earlier rounds label 4 images, and no --labelled" in forgot.output
    assert not (tmp_path / "forgot.txt").exists()
    some = tmp_path / "some.txt"
    some.write_text("\n".join(r["name"] for r in rows[:2]) + "\n", encoding="utf-8")
    fewer = runner.invoke(app, [*unlabelled[:-3], "--labelled", str(some), "--out", str(tmp_path / "fewer.txt")])
    assert fewer.exit_code == 0, fewer.output
    assert "--labelled names 2 images, the plan's earlier rounds 4" in " ".join(fewer.stderr.split())


def test_al_select_refuses_clip_weights_nothing_would_read(trained, tmp_path, monkeypatch):
    """--pretrained was silently ignored with --tiny, and with a previous round's model."""
    monkeypatch.setenv("IQA_HOME", str(trained.home))
    base = ["al", "select", "--data", "mini", "--device", "cpu", "--out", str(tmp_path / "next.txt")]
    tiny = runner.invoke(app, [*base, "--tiny", "--pretrained", "my_clip"])
    assert tiny.exit_code == 2 and "--pretrained: --tiny builds a small network" in tiny.output
    weights = str(trained.split / "round-1" / "best.safetensors")
    later = runner.invoke(app, [*base, "--round", "2", "--weights", weights, "--pretrained", "my_clip"])
    assert later.exit_code == 2 and "--pretrained: the weights of zero-shot selection" in later.output
    assert not (tmp_path / "next.txt").exists()
    untrained = runner.invoke(app, [*base, "--tiny", "--pretrained", "none", "--budget", "50"])
    assert untrained.exit_code == 0, untrained.output  # no weights asked for, none read


def test_variant_of_a_method_without_variants_is_refused(trained, tmp_path, monkeypatch):
    """`iqa eval aliqa --variant anything` scored as if the option were not there, exit 0."""
    monkeypatch.setenv("IQA_HOME", str(trained.home))
    folder = write_folder(tmp_path / "photos", n=2)
    for args in (["eval", "aliqa", "--data", "mini"], ["predict", "aliqa", str(folder)]):
        result = runner.invoke(app, [*args, "--weights", "whole", "--device", "cpu", "--variant", "original"])
        assert result.exit_code == 2 and "--variant: aliqa has no variants" in result.output, result.output


def pool_args(folder):
    return ["al", "select", "--images", str(folder), "--tiny", "--device", "cpu", "--budget", "80"]


def test_al_select_reads_a_folder_of_unscored_images(tmp_path, single_thread):
    folder = write_folder(tmp_path / "photos", n=20)
    (folder / "scores.csv").unlink()  # nobody has labelled anything yet
    out = tmp_path / "next.txt"
    result = runner.invoke(
        app, ["al", "select", "--images", str(folder), "--tiny", "--device", "cpu", "--budget", "80", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    names = out.read_text(encoding="utf-8").split()
    assert len(names) == 4 and all((folder / n).is_file() for n in names)  # len(arange(20 - 3.2, 20))
    labelled = tmp_path / "done.txt"
    labelled.write_text("\n".join(names) + "\n", encoding="utf-8")
    again = tmp_path / "again.txt"
    result = runner.invoke(
        app,
        [
            "al",
            "select",
            "--images",
            str(folder),
            "--tiny",
            "--device",
            "cpu",
            "--budget",
            "80",
            "--labelled",
            str(labelled),
            "--out",
            str(again),
        ],
    )
    assert result.exit_code == 0, result.output
    assert not set(again.read_text(encoding="utf-8").split()) & set(names)
    # --out onto the --labelled list replaced the names labelled so far with this round's picks.
    onto = runner.invoke(app, [*pool_args(folder), "--labelled", str(labelled), "--out", str(labelled)])
    assert "is the --labelled file" in one_error_line(onto) and labelled.read_text(encoding="utf-8").split() == names
    # `--out notes.txt` replaced any text file; a .txt is replaced only when it is a list of image names.
    notes = tmp_path / "notes.txt"
    notes.write_text("meeting: label the next round\nim01.jpg looked blurred\n", encoding="utf-8")
    onto_notes = runner.invoke(app, [*pool_args(folder), "--out", str(notes)])
    line = one_error_line(onto_notes)
    assert "is not a list of image names (it holds the line 'meeting: label the next round')" in line
    assert notes.read_text(encoding="utf-8").startswith("meeting")
    assert runner.invoke(app, [*pool_args(folder), "--out", str(again)]).exit_code == 0  # an earlier list: replaced
    # Round 2 without the round-1 model took zero-shot CLIP without a word (AL-IQA takes the round-1 model).
    pool = ["al", "select", "--images", str(folder), "--tiny", "--device", "cpu", "--budget", "80"]
    later = [*pool, "--round", "2", "--labelled", str(labelled), "--out", str(tmp_path / "r2.txt")]
    line = one_error_line(runner.invoke(app, later), after_progress=True)  # once the pool's size is known
    assert "--round 2 selects with the previous round's kept model, as AL-IQA does: pass --weights" in line
    on_purpose = runner.invoke(app, [*later, "--weights", "zero-shot", "--json"])
    assert on_purpose.exit_code == 0, on_purpose.output
    assert "not AL-IQA's rule" in json.loads(on_purpose.stdout)["uncertainty"]


def test_bad_input_gives_one_line(tmp_path):
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    train = ["train", "aliqa", "--tiny", "--device", "cpu", "--data", "mini", "--val-fraction", "0.2"]
    small = runner.invoke(app, [*train, "--budget", "2", "--out", str(tmp_path / "a")])
    assert "no image to select" in one_error_line(small, after_progress=True)
    every = runner.invoke(app, [*train, "--eval-every", "3", "--out", str(tmp_path / "b")])
    assert "--eval-period" in one_error_line(every, after_progress=True)
    assert "--label-scale must be one of" in one_error_line(runner.invoke(app, [*train, "--label-scale", "native"]))
    assert "round_n_ctx" in one_error_line(runner.invoke(app, [*train, "--round-n-ctx", "4,8"]))
    select = ["al", "select", "--data", "mini", "--tiny", "--device", "cpu"]
    labelled = tmp_path / "labelled.txt"
    labelled.write_text("img000.png\nnot-an-image.png\n", encoding="utf-8")
    line = one_error_line(runner.invoke(app, [*select, "--labelled", str(labelled), "--out", str(tmp_path / "x.txt")]))
    assert "not images of the pool" in line and "not-an-image.png" in line
    assert ".csv or .txt" in one_error_line(runner.invoke(app, [*select, "--out", str(tmp_path / "x.json")]))
    late = runner.invoke(app, [*select, "--round", "4", "--out", str(tmp_path / "x.txt")])
    assert "between 1 and 3" in one_error_line(late)
    both = ["al", "select", "--data", "mini", "--images", str(tmp_path), "--tiny", "--out", str(tmp_path / "x.txt")]
    assert "either --data" in one_error_line(runner.invoke(app, both))
    # Options that describe a distance file do nothing without one: refused, not ignored.
    for idle in (["--distance-key", "dist"], ["--distance-order", "authors"]):
        line = one_error_line(runner.invoke(app, [*select, *idle, "--out", str(tmp_path / "x.txt")]))
        assert idle[0] in line and "--distances" in line
    assert not (tmp_path / "x.txt").exists()


def test_the_authors_whole_dataset_pool(tmp_path, single_thread):
    """--pool all: the pool is every image (the split's test part included), the test set is what was
    not selected, and it needs --select-on test, said in the run's record."""
    make_cache("mini", tmp_path / "src", data_dir() / "mini.h5")
    refused = runner.invoke(app, ["train", "aliqa", *FAST, "--data", "mini", "--pool", "all", "--name", "no"])
    assert (
        "add --select-on test" in one_error_line(refused, after_progress=True)
        and not (data_dir().parent / "runs" / "no").exists()
    )
    args = [*without(FAST, "--val-fraction"), "--data", "mini", "--pool", "all", "--select-on", "test"]
    args += ["--no-fine-tune", "--json"]
    args[args.index("50")] = "25"  # 25 % of all 32 images: 2 + 4 + 4
    result = runner.invoke(app, ["train", "aliqa", *args, "--name", "all"])
    assert result.exit_code == 0, result.output
    assert "POOL = THE WHOLE DATASET" in result.output
    split = data_dir().parent / "runs" / "all" / "split-random_0"
    labelled = json.loads((split / "labelled.json").read_text(encoding="utf-8"))["indices"]
    record = json.loads((split / "result.json").read_text(encoding="utf-8"))
    assert record["selected_on"] == "test" and "optimistic" in record["al_pool"]
    row = json.loads(result.stdout)["splits"][0]
    assert row["n"] == 32 - len(labelled)  # the test set is every image not selected

    # `iqa eval` scored the cache's split random_0 test part as an unseen test, although the model had picked
    # some of its training images there; and its record claimed the split's training part as what it saw.
    from iqa_cli.data.cache import open_cache
    from iqa_cli.models.checkpoint import read_metadata
    from iqa_cli.train.data import read_seen_files, seen_files

    with open_cache(data_dir() / "mini.h5") as mini:  # its labelled images come from every part
        expected = seen_files(mini, np.asarray(labelled))
    kept = read_metadata(split / "best.safetensors")
    assert np.array_equal(read_seen_files(kept), expected) and "--pool all" in kept["trained_beyond_split"]
    scored = runner.invoke(app, ["eval", "aliqa", "--data", "mini", "--weights", "all", "--device", "cpu"])
    line = one_error_line(scored, after_progress=True)
    assert "trained on images from anywhere in mini" in line and "split random_0's included" in line
    every = runner.invoke(app, ["eval", "aliqa", "--data", "mini", "--weights", "all", "--cross", "mini", "--json"])
    assert every.exit_code == 0 and json.loads(every.stdout)["results"][0]["includes_training_images"]


def test_weight_sweep_with_repeats_reports_each_run_and_the_mean(tmp_path, single_thread):
    """The authors' main(0.005); main(0.01); main(0.1); main(1), each training three times: here two
    weights x two repeats, every run in the sweep folder, the mean per weight, and a rerun trains nothing."""
    make_cache("mini", tmp_path / "src", data_dir() / "mini.h5")
    args = [*without(FAST, "--val-fraction"), "--data", "mini", "--no-fine-tune", "--select-on", "test"]
    args += ["--name", "sw", "--json"]
    args[args.index("--epochs") + 1] = "1"
    sweep = ["--sweep", "borda_weights", "--sweep-values", "0.005,1", "--repeats", "2"]
    result = runner.invoke(app, ["train", "aliqa", *args, *sweep])
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)
    root = data_dir().parent / "runs" / "sw"
    assert [(r["value"], r["repeat"], r["seed"]) for r in table["runs"]] == [
        ("0.005", 1, 0), ("0.005", 2, 1), ("1", 1, 0), ("1", 2, 1)
    ]  # fmt: skip
    for row in table["runs"]:
        config = json.loads((Path(row["run"]) / "run.json").read_text(encoding="utf-8"))["config"]
        assert config["params"]["borda_weights"] == [float(row["value"])] * 3  # one weight for every round
        assert config["engine"]["seed"] == row["seed"]
        results = json.loads((Path(row["run"]) / "results.json").read_text(encoding="utf-8"))
        assert row["srcc"] == results["median"]["srcc"]
        # How many of its splits report raw PLCC under plcc_logistic (no logistic fit) travels with it.
        assert row["logistic_fallbacks"] == sum(s["logistic_fit"] == "fallback" for s in results["splits"])
    for mean in table["by_value"]:
        runs = [r["srcc"] for r in table["runs"] if r["value"] == mean["value"]]
        assert mean["runs"] == 2 and mean["mean_srcc"] == pytest.approx(np.mean(runs))
        fallbacks = [r["logistic_fallbacks"] for r in table["runs"] if r["value"] == mean["value"]]
        assert mean["logistic_fallbacks"] == sum(fallbacks)
    assert json.loads((root / "sweep.json").read_text(encoding="utf-8")) == table
    again = runner.invoke(app, ["train", "aliqa", *args, *sweep])  # finished runs are read back, not retrained
    assert again.exit_code == 0 and json.loads(again.stdout)["runs"] == table["runs"]
    assert "sweep:" not in again.output
    # Run again with another option, the finished runs were read back as if made with it: refused, naming it.
    longer = [*args[: args.index("--epochs") + 1], "2", *args[args.index("--epochs") + 2 :]]
    changed = runner.invoke(app, ["train", "aliqa", *longer, *sweep, "--sweep-values", "0.005,0.1"])
    line = one_error_line(changed)
    assert "borda_weights-0.005-r1: this sweep's run was made with other options: epochs 1 (now 2)" in line
    same_by_path = runner.invoke(app, ["train", "aliqa", *args, "--data", str(data_dir() / "mini.h5"), *sweep])
    assert same_by_path.exit_code == 0 and json.loads(same_by_path.stdout)["runs"] == table["runs"]
    other = make_cache("mini", tmp_path / "src2", tmp_path / "elsewhere" / "mini.h5", seed=1)
    other_data = runner.invoke(app, ["train", "aliqa", *args, "--data", str(other), *sweep])
    assert f"--data '{data_dir() / 'mini.h5'}' (now '{other}')" in one_error_line(other_data)
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [*(Path(r["run"]).name for r in table["runs"]), "sweep.json"]
    )
    bad = runner.invoke(app, ["train", "aliqa", *args, "--sweep", "bogus", "--sweep-values", "1"])
    assert "--sweep: aliqa has no option 'bogus'" in one_error_line(bad)
    bad = runner.invoke(app, ["train", "aliqa", *args, "--sweep-values", "1,2"])
    assert "--sweep-values needs --sweep" in one_error_line(bad)


def test_rounds_cut_by_max_steps_make_the_run_shortened(tmp_path, single_thread):
    """Each AL round trains under `--max-steps`; a round cut short chose the next round's images with a
    shortened model, so the run is reported as cut even where the last round was not."""
    make_cache("mini", tmp_path / "mini", data_dir() / "mini.h5")
    args = [*FAST, "--no-fine-tune", "--max-steps", "1", "--data", "mini", "--out", str(tmp_path / "r"), "--json"]
    result = runner.invoke(app, ["train", "aliqa", *args])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)["splits"]
    assert row["stopped_because"] == "step limit (1)" and row["epochs"] == 1
    steps = json.loads((tmp_path / "r" / "split-random_0" / "result.json").read_text(encoding="utf-8"))["al_steps"]
    assert [step.get("stopped_because") for step in steps] == ["step limit (1)"] * 3
