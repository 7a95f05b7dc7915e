"""The benchmark scripts run: each one's `--quick` mode in a subprocess prints well-formed JSON lines
and the table (the figures themselves are not checked: a smoke run on a shared machine means nothing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import common

REPO = Path(__file__).resolve().parents[1]
MEASURED = {
    "prepare": {"prepare.koniq.iqa", "prepare.koniq.naive", "prepare.spaq.iqa", "prepare.memory.growth.tree"},
    "loading": {"loading.iqa.preloaded", "loading.iqa.streamed", "loading.per_image.workers0"},
    "train_step": {"train_step.engine", "train_step.bare", "train_step.overhead", "eval.iqa_eval"},
    "scaling": {"scaling.prepare.4x", "scaling.eval.linearity.4x", "scaling.ddp.2rank_1thread"},
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench")  # shared, so generated images are made once


def run_quick(name: str, workdir: Path, tmp_path: Path) -> tuple[list[dict], str]:
    jsonl = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", f"benchmarks.bench_{name}", "--quick", "--workdir", str(workdir)]
    command += ["--jsonl", str(jsonl)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    env["TMPDIR"] = str(tmp_path)  # bench_scaling's torchrun leaves a torchelastic_* folder there
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert records and records == [json.loads(line) for line in jsonl.read_text(encoding="utf-8").splitlines()]
    return records, done.stderr


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_quick_run_prints_json_lines_and_a_table(name, workdir, tmp_path):
    records, stderr = run_quick(name, workdir, tmp_path)
    for record in records:
        assert set(common.RECORD_KEYS) <= set(record), record
        assert record["bench"] == name and record["quick"] is True
        assert "error" not in record, record["error"]
        assert record["versions"]["torch"] and record["versions"]["python"]
        if "ratio" in record:
            assert record["ratio"] is None or record["ratio"] > 0
        elif record["seconds"] is not None:
            assert record["seconds"] > 0 and record["images_per_s"] > 0
    assert MEASURED[name] <= {r["what"] for r in records}
    assert "| what" in stderr and f"benchmarks/{name}" in stderr


def test_gpu_script_says_when_there_is_no_cuda(workdir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the no-CUDA answer cannot be checked here")
    records, _ = run_quick("gpu", workdir, tmp_path)
    assert len(records) == 1 and records[0]["skipped"] == "no CUDA device"
    assert records[0]["images_per_s"] is None and records[0]["seconds"] is None


def test_comparisons_and_the_table(capsys):
    import argparse

    bench = common.Bench("unit", argparse.Namespace(quick=True, jsonl=None))
    fast = bench.emit("fast", size={"images": 10}, seconds=1.0, images=10, peak_rss_mb=100.0)
    slow = bench.emit("slow", size={"images": 10}, seconds=4.0, images=10, peak_rss_mb=105.0)
    speed = bench.compare("speedup", fast, slow, target=3.0)
    memory = bench.compare("memory", slow, fast, key="peak_rss_mb", target=1.10, at_most=True)
    assert speed["ratio"] == 4.0 and speed["meets_target"] is True
    assert memory["ratio"] == 1.05 and memory["meets_target"] is True and memory["target_is"] == "at most"
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["what"] for r in lines] == ["fast", "slow", "speedup", "memory"]
    table = common.table_lines(bench.records)
    assert table[0].startswith("| what") and any("<= 1.1" in row and "meets target" in row for row in table)
    with common.PeakRSS() as peak:
        block = np.ones(64 * 2**20, dtype=np.uint8)  # written, so resident
    del block
    assert peak.mb is not None
    if peak.scope == "measurement":  # Linux: this block's own peak
        assert peak.mb >= 64


def test_predict_bench_quick_run_reports_its_shares(workdir):
    command = [sys.executable, "-m", "benchmarks.bench_predict", "--quick", "--workdir", str(workdir)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "2"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["bench"] == "predict" and report["quick"] is True
    assert set(report["seconds"]) == {"predict", "predict, serial decode", "bare forward"}
    # A share, measured on a few tiny images: noise can put it below 0 on a busy machine (the bare forward
    # then ran slower than the whole command), so only its being a measured fraction is checked.
    assert -1 < report["non_forward_share"]["median"] < 1 and report["peak_ratio"] > 0


def test_eval_bench_quick_run_reports_its_ratios(workdir):
    command = [sys.executable, "-m", "benchmarks.bench_eval", "--quick", "--workdir", str(workdir)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["bench"] == "eval" and report["quick"] is True and report["target"] == 1.10
    assert "iqa eval" in report["seconds"] and "bare forward, 1 thread" in report["seconds"]
    assert report["ratio_to_bare_forward"]["iqa eval"]["median"] > 0


def test_gpu_check_says_when_there_is_no_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the no-CUDA answer cannot be checked here")
    out = tmp_path / "gpu_check.json"
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert figures["skipped"] == "no CUDA device"
    assert figures["dependencies"]["ok"] and "torch" in figures["dependencies"]["versions"]


def test_gpu_check_rehearsal_runs_its_torchrun_step_and_leaves_nothing_behind(tmp_path):
    """The rehearsal left its work folder (about 1 GB of caches and runs) and torchrun's torchelastic_*
    folders in the system's temporary directory."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "rehearsal.json"
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--rehearse-on-cpu", "--skip", "smoke", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert figures["caches"]["ok"] and figures["torchrun"]["nccl_all_reduce"]["ok"]
    assert figures["torchrun"]["train_under_torchrun"]["ok"]
    assert list(scratch.iterdir()) == [] and (tmp_path / "rehearsal_logs.txt").is_file()


def test_gpu_check_stops_first_on_a_package_older_than_the_floor(monkeypatch):
    """A GPU machine's own timm or Typer may be older than iqa's floors: that must cost no GPU minutes."""
    import importlib.metadata

    from benchmarks.gpu_check import dependency_check

    assert dependency_check()["ok"]  # this environment meets pyproject.toml
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.0.3" if name == "timm" else real(name))
    report = dependency_check(
        ["torch>=2.6", "timm>=1.0.23,<2", "no-such-package-iqa>=1", "tomli>=2; python_version < '3'"]
    )
    assert not report["ok"] and report["versions"]["timm"] == "1.0.3" and "tomli" not in report["versions"]
    assert report["unmet"] == ["timm 1.0.3 (needs >=1.0.23,<2)", "no-such-package-iqa: not installed (needs >=1)"]


def test_gpu_check_projects_the_koniq_protocol_from_measured_rates():
    from benchmarks.gpu_check import KONIQ_IMAGES, projection

    records = [
        {"what": "gpu.engine.vtiqa.train", "images_per_s": 7000.0},
        {"what": "gpu.eval.predict_loop.off", "images_per_s": 10000.0},
        {"what": "gpu.eval.predict_loop.tf32", "images_per_s": 20000.0},  # iqa's default is the one used
    ]
    result = projection({"records": records}, 100)
    per_epoch = KONIQ_IMAGES * 0.72 / 7000 + (KONIQ_IMAGES * 0.08 + KONIQ_IMAGES * 0.2) / 20000
    assert result["projected_minutes"] == round(10 * 100 * per_epoch / 60, 1)
    assert result["meets_goal"] is (result["projected_minutes"] <= 30)
    assert "error" in projection({"records": []}, 100)


def test_gpu_check_compares_the_scoring_views_with_the_full_resize():
    from benchmarks.gpu_check import scoring_views_check

    result = scoring_views_check("cpu")  # on the GPU machine: "cuda"
    assert result["ok"] and set(result["mismatched_pixels"]) == {"384x512", "768x1024", "500x500", "1536x2048"}
