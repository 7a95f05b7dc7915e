"""The one prepared GPU check (issue 16): everything a first CUDA machine must show, in one command,
within about 8 minutes on one H100/H200, offline. It writes one JSON file of figures.

1. `bench_gpu --quick`: bf16+SDPA against fp32 eager, MFU, GPU busy share, GPU-resident cache.
2. A CUDA smoke run of every recipe for a few steps at bf16 on generated caches (`vtiqa`, `ieit` both
   stages, `aliqa`, `ssliqa` for each network pair, `vipnet-dpm`, `vipnet`), `--compile` once, and
   the evaluation precision rule (float32 against TF32 and bf16 on one model: distinct predictions
   and SRCC), and VT-IQA's scoring views against the full resize on the GPU (bit-exact).
3. `torchrun` on one GPU: an NCCL all-reduce and a training run launched by torchrun.
4. The projected time of the full 10-split VT-IQA protocol on KonIQ-10k from the measured training
   and evaluation throughput (goal: under 30 minutes).

    bash benchmarks/gpu_check.sh                  # on the GPU machine, from the repository root
    python -m benchmarks.gpu_check --out F.json   # the same without the wrapper (logs: F_logs.txt)

Each step has its own time limit and records its error instead of stopping the others. Before any
of them, the machine's packages are checked against `pyproject.toml` (an unmet one stops the check).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# The VT-IQA protocol on KonIQ-10k (methods spec; the recipe's defaults): 10 splits of 80/20.
KONIQ_IMAGES = 10_073
SPLITS = 10


def _run(command: list[str], env: dict[str, str], timeout: float, log: Path) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        log.write_text(
            f"$ {' '.join(command)}\n(timed out after {timeout:.0f} s)\n{exc.stdout or ''}{exc.stderr or ''}",
            encoding="utf-8",
        )
        return {
            "ok": False,
            "seconds": round(time.perf_counter() - started, 1),
            "error": f"timed out ({timeout:.0f} s)",
        }
    log.write_text(f"$ {' '.join(command)}\n{done.stdout}\n{done.stderr}", encoding="utf-8")
    result: dict[str, Any] = {"ok": done.returncode == 0, "seconds": round(time.perf_counter() - started, 1)}
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        result["error"] = (lines[-1] if lines else f"exit {done.returncode}")[:500]
    result["stdout"] = done.stdout
    return result


def dependency_check(requirements: list[str] | None = None) -> dict[str, Any]:
    """Whether this Python meets `pyproject.toml`'s dependencies (the machine's own packages, or the
    wheels carried in `.whl/`): each version, and what falls short. Checked first, so a machine with
    an old timm or Typer spends no GPU minutes on steps that cannot work. (iqa is not installed there,
    so the list comes from the checkout's pyproject.toml.)"""
    import importlib.metadata as metadata

    from iqa_cli.dependencies import checked_requirements, unmet_requirements

    if requirements is None:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - the GPU machines run Python 3.12
            import tomli as tomllib
        requirements = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    versions: dict[str, str] = {}
    for name, _spec in checked_requirements(requirements):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    unmet = unmet_requirements(requirements)
    return {"ok": not unmet, "versions": versions, **({"unmet": unmet} if unmet else {})}


def _json_tail(text: str) -> Any:
    """The JSON document a `--json` command printed (the whole output, or its last one-line document)."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _iqa(*args: str) -> list[str]:
    return [sys.executable, "-m", "iqa_cli", *args]


def bench_gpu(env: dict[str, str], work: Path, logs: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.bench_gpu", "--quick", "--workdir", str(work / "bench")]
    result = _run(command, env, 240, logs / "bench_gpu.log")
    records = [json.loads(line) for line in result.pop("stdout", "").splitlines() if line.startswith("{")]
    result["records"] = records
    return result


def _caches(env: dict[str, str], work: Path, logs: Path) -> dict[str, Any]:
    """Generated caches: a small folder with a quality ramp (`mini`, `other`), its enhanced images for
    IEIT (with a tiny stand-in classifier), and a distorted set for the DPM."""
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, '.');"
        "from tests.train.caches import make_cache;"
        "from tests.enhance.helpers import enhanced_cache, tiny_classifier;"
        "from tests.distort.images import write_reference_folder;"
        "from iqa_cli.home import data_dir;"
        f"w = Path({str(work)!r});"
        "make_cache('mini', w / 'src_mini', data_dir() / 'mini.h5', n=64, splits=1);"
        "make_cache('other', w / 'src_other', data_dir() / 'other.h5', n=24, seed=5, splits=1);"
        "enhanced_cache(w / 'src_enh', data_dir() / 'enh.h5', n=48);"
        "tiny_classifier(w / 'classifier.safetensors');"
        "write_reference_folder(w / 'refs', count=8, size=(128, 96))"
    )
    made = _run([sys.executable, "-c", code], env, 120, logs / "caches.log")
    if not made["ok"]:
        return made
    distorted = _run(
        _iqa("prepare", "distorted", "--refs", str(work / "refs"), "--out", str(work / "kadis.h5"), "--types",
             "1,11,27", "--levels", "4-5", "--size", "128x96", "--test-fraction", "0.25", "--json"),
        env, 120, logs / "distorted.log",
    )  # fmt: skip
    return {
        "ok": distorted["ok"],
        "seconds": made["seconds"] + distorted["seconds"],
        **({"error": distorted.get("error")} if not distorted["ok"] else {}),
    }


def smoke(env: dict[str, str], work: Path, logs: Path, device: str = "cuda") -> dict[str, Any]:
    """Every recipe for a few bf16 steps on the GPU (tiny networks: the code paths, not the speed)."""
    out: dict[str, Any] = {}
    gpu = ["--tiny", "--device", device, "--amp", "bf16", "--epochs", "2", "--json", "--log-every", "1000"]
    runs = {
        "vtiqa": ["vtiqa", "--data", "mini", "--name", "vtiqa"],
        "vtiqa_compile": ["vtiqa", "--data", "mini", "--compile", "--name", "vtiqa-compile"],
        "ieit_stage1": [
            "ieit",
            "--data",
            "enh",
            "--classifier",
            str(work / "classifier.safetensors"),
            "--name",
            "ieit1",
        ],
        "ieit_stage2": ["ieit", "--data", "enh", "--stage", "2", "--from", "ieit1", "--name", "ieit2"],
        "aliqa": ["aliqa", "--data", "mini", "--budget", "50", "--eval-period", "1", "--name", "aliqa"],
        "vipnet_dpm": ["vipnet-dpm", "--data", str(work / "kadis.h5"), "--name", "dpm"],
        "vipnet": ["vipnet", "--data", "mini", "--watch", "other", "--name", "vipnet"],
    }
    for network in ("tres", "alexnet", "inceptionresv2", "googlenet"):
        runs[f"ssliqa_{network}"] = ["ssliqa", "--data", "mini", "--labeled", "24", "--network", network,
                                     "--name", f"ssliqa-{network}"]  # fmt: skip
    for name, args in runs.items():
        result = _run(_iqa("train", *args[:1], *gpu, *args[1:]), env, 150, logs / f"smoke_{name}.log")
        report = _json_tail(result.pop("stdout", ""))
        if report and report.get("splits"):
            row = report["splits"][0]
            result.update({k: row.get(k) for k in ("srcc", "plcc", "steps", "epochs") if k in row})
        out[name] = result
    out["eval_precision"] = _eval_precision(env, logs, device)
    try:
        out["scoring_views"] = scoring_views_check(device)
    except Exception as exc:  # recorded like every other step's failure
        out["scoring_views"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return out


def _eval_precision(env: dict[str, str], logs: Path, device: str = "cuda") -> dict[str, Any]:
    """One trained tiny VT-IQA model scored in float32, TF32 and bf16: distinct predictions and SRCC."""
    result: dict[str, Any] = {}
    for amp in ("off", "tf32", "bf16"):
        per_image = logs / f"eval_{amp}.csv"
        done = _run(_iqa("eval", "vtiqa", "--data", "mini", "--device", device, "--amp", amp, "--json",
                         "--per-image", str(per_image)), env, 120, logs / f"eval_{amp}.log")  # fmt: skip
        report = _json_tail(done.pop("stdout", ""))
        if report:
            row = report["results"][0]
            lines = per_image.read_text(encoding="utf-8").splitlines()[1:] if per_image.is_file() else []
            preds = {line.split(",")[-2] for line in lines}
            done.update(srcc=row.get("srcc"), n=row.get("n"), distinct_predictions=len(preds))
        result[amp] = done
    if all(result[a].get("srcc") is not None for a in ("off", "tf32")):
        result["tf32_srcc_difference"] = abs(result["tf32"]["srcc"] - result["off"]["srcc"])
    return result


def scoring_views_check(device: str = "cuda") -> dict[str, Any]:
    """`resize_spans` (VT-IQA's scoring views) against cutting the full resize, on this device: the CPU
    tests prove it bit-exact there; this is the same check for the CUDA kernel."""
    import torch

    from iqa_cli.train.augment import resize_spans, resize_to

    cells = [(38 + 109 * i, 70 + 109 * i) for i in range(7)]
    generator = torch.Generator().manual_seed(0)
    sizes = [(384, 512), (768, 1024), (500, 500), (1536, 2048)]
    mismatched: dict[str, int] = {}
    for h, w in sizes:
        images = torch.randint(0, 256, (4, 3, h, w), dtype=torch.uint8, generator=generator).to(device)
        full = resize_to(images, 768, 768)
        rows = torch.cat([torch.arange(a, b) for a, b in cells]).to(device)
        cut = full.index_select(2, rows).index_select(3, rows)
        mismatched[f"{h}x{w}"] = int((resize_spans(images, 768, 768, cells, cells) != cut).sum())
    return {"ok": not any(mismatched.values()), "mismatched_pixels": mismatched}


def torchrun_check(env: dict[str, str], work: Path, logs: Path, device: str = "cuda") -> dict[str, Any]:
    backend = "nccl" if device == "cuda" else "gloo"  # gloo: the CPU rehearsal of this script
    code = "\n".join(
        [
            "import torch, torch.distributed as d",
            f"d.init_process_group({backend!r})",
            f"x = torch.ones(4, device={device!r})",
            "d.all_reduce(x)",
            "assert float(x.sum()) == 4.0",
            f"print({backend!r}, 'all_reduce ok')",
            "d.destroy_process_group()",
        ]
    )
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    script = work / "all_reduce.py"
    script.write_text(code + "\n", encoding="utf-8")
    nccl = _run([*torchrun, str(script)], env, 90, logs / "torchrun_nccl.log")
    nccl.pop("stdout", None)
    train = _run([*torchrun, "-m", "iqa_cli", "train", "vtiqa", "--tiny", "--device", device, "--data", "mini",
                  "--epochs", "1", "--json", "--name", "torchrun"], env, 150, logs / "torchrun_train.log")  # fmt: skip
    train.pop("stdout", None)
    return {"nccl_all_reduce": nccl, "train_under_torchrun": train}


def projection(bench: dict[str, Any], recipe_epochs: int) -> dict[str, Any]:
    """Minutes of the 10-split KonIQ protocol from the measured engine training and evaluation rates."""
    records = {r.get("what"): r for r in bench.get("records", []) if isinstance(r, dict)}
    train = records.get("gpu.engine.vtiqa.train", {}).get("images_per_s")
    # iqa's GPU evaluation default is TF32 (float32 outputs); plain float32 when that was not measured
    rates = [records.get(f"gpu.eval.predict_loop.{amp}", {}).get("images_per_s") for amp in ("tf32", "off")]
    evaluation = next((rate for rate in rates if rate), None)
    if not train:
        return {"error": "no engine training rate was measured (see bench_gpu)"}
    train_images = KONIQ_IMAGES * 0.8 * 0.9  # the split's training part less the validation part
    eval_images = KONIQ_IMAGES * 0.8 * 0.1 + KONIQ_IMAGES * 0.2  # validation + test, every epoch
    per_epoch = train_images / train + (eval_images / evaluation if evaluation else 0.0)
    minutes = SPLITS * recipe_epochs * per_epoch / 60
    return {
        "train_images_per_s": train,
        "eval_images_per_s": evaluation,
        "epochs": recipe_epochs,
        "splits": SPLITS,
        "projected_minutes": round(minutes, 1),
        "goal_minutes": 30,
        "meets_goal": minutes <= 30,
        "note": "from bench_gpu --quick rates; evaluation of val + test every epoch"
        + ("" if evaluation else " (no evaluation rate measured: training only)"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    parser.add_argument("--skip", default="", help="comma-separated steps to leave out: bench,smoke,torchrun")
    parser.add_argument(
        "--rehearse-on-cpu", action="store_true", help="run the smoke and torchrun steps on the CPU (gloo)"
    )
    parser.add_argument(
        "--keep-work", action="store_true", help="keep the work folder (caches, runs: about 1 GB) to look at"
    )
    args = parser.parse_args(argv)
    import torch

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    figures: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": torch.__version__}
    figures["dependencies"] = dependency_check()
    if not figures["dependencies"]["ok"]:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2), encoding="utf-8")
        unmet = "; ".join(figures["dependencies"]["unmet"])
        print(
            f"error: this Python does not meet pyproject.toml: {unmet} (carry newer wheels in .whl/)", file=sys.stderr
        )
        return 1
    device = "cpu" if args.rehearse_on_cpu else "cuda"
    if args.rehearse_on_cpu:
        skip.add("bench")
        figures["rehearsal"] = "on the CPU: code paths only, no GPU figures"
    elif not torch.cuda.is_available():
        figures["skipped"] = "no CUDA device"
        args.out.write_text(json.dumps(figures, indent=2), encoding="utf-8")
        print(json.dumps(figures))
        return 0
    figures["device"] = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    work = Path(tempfile.mkdtemp(prefix="iqa-gpu-check-"))
    try:
        return _check(args, skip, figures, work, device)
    finally:
        if args.keep_work:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:  # about 1 GB of caches and runs; the figures and the logs are in --out and beside it
            shutil.rmtree(work, ignore_errors=True)


def _check(args: argparse.Namespace, skip: set[str], figures: dict[str, Any], work: Path, device: str) -> int:
    logs = work / "logs"  # gathered into one file beside --out at the end (few files travel back)
    logs.mkdir(parents=True, exist_ok=True)
    (work / "tmp").mkdir()
    env = {**os.environ, "IQA_HOME": str(work / "home"), "IQA_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env["TMPDIR"] = str(work / "tmp")  # torchrun leaves a torchelastic_* folder in the temporary directory
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    started = time.perf_counter()
    if "bench" not in skip:
        figures["bench_gpu"] = bench_gpu(env, work, logs)
    if not {"smoke", "torchrun"} <= skip:
        figures["caches"] = _caches(env, work, logs)
    if figures.get("caches", {}).get("ok"):
        if "smoke" not in skip:
            figures["smoke"] = smoke(env, work, logs, device)
        if "torchrun" not in skip:
            figures["torchrun"] = torchrun_check(env, work, logs, device)
    from iqa_cli.train.recipes import get_recipe

    epochs = int(get_recipe("vtiqa").Params().epochs)
    figures["koniq_protocol"] = projection(figures.get("bench_gpu", {}), epochs)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2, default=str), encoding="utf-8")
    with open(args.out.with_name(args.out.stem + "_logs.txt"), "w", encoding="utf-8") as combined:
        for log in sorted(logs.glob("*.log")):
            combined.write(f"===== {log.name}\n{log.read_text(errors='replace', encoding='utf-8')[-20000:]}\n")
    print(json.dumps({k: v for k, v in figures.items() if k != "bench_gpu"}, default=str)[:8000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
