"""How time grows with the work: prepare and eval at 1x, 2x and 4x the images, and DDP on CPU.

* prepare: `iqa prepare` (build_cache, all cores, each run in a fresh process) on the first N, 2N
  and 4N images of a generated KonIQ-like folder (1024x768 JPEG -> 512x384). Linear is the goal:
  the seconds per image at 2x and 4x over those at 1x (target <= 1.10).
* eval: `iqa eval vtiqa --cross CACHE` (`evaluate()`, the whole path from loading the checkpoint
  to the per-image rows) on the three caches, with a checkpoint of a freshly initialised network
  (`--model tiny` by default on CPU: the `--tiny` network; `--model full`: DeiT-S/16 at 224).
  Same per-image ratio and target.
* DDP: `iqa train vtiqa` on the 4N cache, 2 epochs, training images/s of the second epoch from
  the run's log.jsonl: 1 rank with 1 thread, 1 rank with every core, and `torchrun` with 2 gloo
  ranks of 1 thread each. Reported, with no target: 2 ranks against 1 rank on the same cores, and
  the scaling efficiency ips(2 ranks) / (2 x ips(1 rank, 1 thread)).

    python -m benchmarks.bench_scaling                # N = 250
    python -m benchmarks.bench_scaling --quick        # smoke run
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_scaling.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common as C  # noqa: E402

RESIZE = "512x384"
FACTORS = (1, 2, 4)


def _per_image(record: dict[str, Any]) -> dict[str, Any]:
    record = dict(record)
    images = (record.get("size") or {}).get("images")
    record["seconds_per_image"] = record["seconds"] / images if images and record.get("seconds") else None
    return record


def _linearity(bench: C.Bench, stage: str, records: dict[int, dict[str, Any]]) -> None:
    base = records.get(1)
    if base is None:
        return
    for factor in FACTORS[1:]:
        if factor in records:
            bench.compare(
                f"scaling.{stage}.linearity.{factor}x",
                _per_image(records[factor]),
                _per_image(base),
                key="seconds_per_image",
                target=1.10,
                at_most=True,
                note=f"seconds per image at {factor}x / at 1x (1.00 = linear)",
            )


def prepare_scaling(bench: C.Bench, folder: C.JpegFolder, n: int, workdir: Path, workers: int | None) -> dict:
    caches: dict[int, Path] = {}
    records: dict[int, dict[str, Any]] = {}
    for factor in FACTORS:
        count = n * factor
        out = workdir / "out" / f"scaling_{count}.h5"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        params = {
            "folder": str(folder.root),
            "csv": str(C.subset_csv(folder, count)),
            "resize": RESIZE,
            "out": str(out),
            "workers": workers,
        }
        what = f"scaling.prepare.{factor}x"
        try:
            result = C.run_child("benchmarks.bench_prepare", "iqa", params)
        except Exception as exc:
            bench.error(what, exc)
            continue
        caches[factor] = out
        records[factor] = bench.emit(
            what,
            size={"images": count, "source": "1024x768 JPEG", "stored": RESIZE},
            seconds=result["seconds"],
            images=result["images"],
            peak_rss_mb=result.get("peak_rss_mb"),
            peak_tree_mb=result.get("peak_tree_mb"),
            workers=result.get("workers"),
        )
    _linearity(bench, "prepare", records)
    return caches


def checkpoint(workdir: Path, model: str) -> Path:
    """A checkpoint with our metadata, of a freshly initialised VT-IQA network (speed does not depend
    on the weights)."""
    import torch

    from iqa_cli.models.checkpoint import save_checkpoint
    from iqa_cli.train.config import to_plain
    from iqa_cli.train.recipes import get_recipe
    from iqa_cli.train.trainer import resolve_config

    path = workdir / "out" / f"scaling_vtiqa_{model}.safetensors"
    if path.is_file():
        return path
    recipe = get_recipe("vtiqa")
    params = resolve_config(recipe, tiny=model == "tiny", config_file=None, overrides={"pretrained": "none"}).params
    torch.manual_seed(0)
    network = recipe.build_model(params, tiny=model == "tiny", pretrained=False)
    meta = {"method": "vtiqa", "variant": "simplified", "tiny": model == "tiny", "params": to_plain(params)}
    return save_checkpoint(network, path, meta)


def eval_scaling(bench: C.Bench, caches: dict[int, Path], workdir: Path, args: Any) -> None:
    from iqa_cli.train.evaluate import EvalOptions, evaluate

    weights = checkpoint(workdir, args.model)
    records: dict[int, dict[str, Any]] = {}
    for factor, cache in sorted(caches.items()):
        what = f"scaling.eval.{factor}x"
        options = EvalOptions(method="vtiqa", cross=str(cache), weights=str(weights), device="cpu", preload_gb=1e6)
        try:
            with C.PeakRSS() as peak:
                started = time.perf_counter()
                report = evaluate(options)
                seconds = time.perf_counter() - started
        except Exception as exc:
            bench.error(what, exc)
            continue
        images = int(report.results[0]["n"])
        records[factor] = bench.emit(
            what,
            size={"images": images, "model": args.model},
            seconds=seconds,
            images=images,
            peak_rss_mb=peak.mb,
            peak_rss_scope=peak.scope,
            method="evaluate(): iqa eval vtiqa --cross CACHE --weights W",
        )
    _linearity(bench, "eval", records)


def _train_command(cache: Path, out: Path, args: Any) -> list[str]:
    command = ["train", "vtiqa", "--data", str(cache), "--device", "cpu", "--epochs", "2", "--freeze-epochs", "0"]
    command += ["--batch-size", str(args.batch_size), "--eval-every", "1000", "--no-eval-test"]
    command += ["--select-on", "test"]  # a throughput run: no validation part to carve (the quick cache is small)
    command += ["--log-every", "1000000", "--out", str(out), "--json", "--split", "random_0"]
    command += ["--tiny"] if args.model == "tiny" else ["--pretrained", "none"]
    return command


def ddp_run(cache: Path, workdir: Path, args: Any, ranks: int, threads: int) -> dict[str, Any]:
    out = workdir / "runs" / f"ddp_{ranks}r{threads}t_{time.strftime('%Y%m%d-%H%M%S')}"
    shutil.rmtree(out, ignore_errors=True)
    if ranks == 1:
        command = [sys.executable, "-m", "iqa_cli", *_train_command(cache, out, args)]
    else:
        torchrun = Path(sys.executable).with_name("torchrun")
        launcher = [str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"]
        command = [*launcher, "--standalone", "--nproc_per_node", str(ranks), "-m", "iqa_cli"]
        command += _train_command(cache, out, args)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(C.REPO)}
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600, cwd=C.REPO)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-6:])
        raise RuntimeError(f"{' '.join(command[:6])} ... exited {done.returncode}: {tail}")
    log = out / "random_0" / "log.jsonl"
    if not log.is_file():
        found = sorted(out.rglob("log.jsonl"))
        if not found:
            raise RuntimeError(f"no log.jsonl under {out}")
        log = found[0]
    lines = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    shutil.rmtree(out, ignore_errors=True)
    last = [r for r in lines if r.get("epoch") == 1 and r.get("images_per_s")]
    if not last:
        raise RuntimeError(f"{log} has no second-epoch training speed")
    return {"images_per_s": last[0]["images_per_s"], "wall_seconds": wall}


def ddp_scaling(bench: C.Bench, cache: Path, workdir: Path, args: Any) -> None:
    cores = C.cores()
    runs = [(1, 1), (1, cores), (2, 1)] if not args.quick else [(1, 1), (2, 1)]
    records: dict[tuple[int, int], dict[str, Any]] = {}
    for ranks, threads in dict.fromkeys(runs):
        what = f"scaling.ddp.{ranks}rank_{threads}thread"
        try:
            result = ddp_run(cache, workdir, args, ranks, threads)
        except Exception as exc:
            bench.error(what, exc)
            continue
        records[(ranks, threads)] = bench.emit(
            what,
            size={"model": args.model, "batch": args.batch_size, "ranks": ranks, "threads_per_rank": threads},
            images_per_s=result["images_per_s"],
            seconds=result["wall_seconds"],
            backend="gloo" if ranks > 1 else None,
            note="images/s: the engine's training speed in epoch 2 (log.jsonl); seconds: the whole command",
        )
    two, one = records.get((2, 1)), records.get((1, 1))
    if two and one:
        ratio = two["images_per_s"] / (2 * one["images_per_s"])
        bench.emit(
            "scaling.ddp.efficiency",
            size=two["size"],
            ratio=ratio,
            target=None,
            note="ips(2 ranks x 1 thread) / (2 x ips(1 rank x 1 thread)); 1.00 = perfect",
        )
    same = records.get((1, cores))
    if two and same and cores != 1:
        bench.compare(
            "scaling.ddp.vs_1rank_same_cores",
            two,
            same,
            target=None,
            note=f"2 ranks x 1 thread vs 1 rank x {cores} threads on the same {cores} cores",
        )


def main(argv: list[str]) -> int:
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=250, help="N: the runs use N, 2N and 4N images")
    parser.add_argument("--model", choices=("tiny", "full"), default="tiny", help="network for eval and DDP")
    parser.add_argument("--batch-size", type=int, default=32, help="DDP runs' global training batch")
    parser.add_argument("--workers", type=int, default=None, help="prepare's worker processes (default all cores)")
    parser.add_argument(
        "--distinct", type=int, default=64, help="images with their own pixels (the rest: copies with a JPEG comment)"
    )
    parser.add_argument("--no-ddp", action="store_true", help="skip the DDP runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.batch_size, args.distinct = 6, 8, 4
    C.torch_setup()
    bench = C.Bench("scaling", args)
    workdir = C.workdir_of(args)
    with C.scratch_home(workdir):
        folder = C.jpeg_folder(args.images * FACTORS[-1], C.KONIQ_LIKE, distinct=args.distinct, workdir=workdir)
        caches = prepare_scaling(bench, folder, args.images, workdir, args.workers)
        try:
            eval_scaling(bench, caches, workdir, args)
            if not args.no_ddp and FACTORS[-1] in caches:
                ddp_scaling(bench, caches[FACTORS[-1]], workdir, args)
        finally:
            for cache in caches.values():
                cache.unlink(missing_ok=True)
    return bench.finish()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
