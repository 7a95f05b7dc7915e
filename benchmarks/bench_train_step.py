"""The engine's overhead: a full VT-IQA training step and `iqa eval` against the bare network.

* training: the engine's `Trainer` (what `iqa train vtiqa` runs: batches from the `ViewStore`,
  per-batch re-seeding, crops/flip/mosaic, forward, L1 loss, the finite-loss check, backward, SGD
  step, logging) on a generated KonIQ-like cache, its step time read from the engine's own progress
  callbacks; against the bare network's forward/backward/SGD step on input tensors already in
  memory (same model, optimiser, batch size and threads). Target: overhead <= 10 %.
* evaluation: `iqa eval vtiqa --cross CACHE --weights W` (`evaluate()`: loading the checkpoint,
  preparing the views, the test-time protocol, metrics, per-image rows) and its inner loop
  (`predict_scores` on ready views), against the bare forward over the same number of images.

`--model full` is the protocol network (DeiT-S/16 at 224, views 244/768); `--model tiny` is the
`--tiny` test network (a 2-block, 64-wide ViT at 64 px): on a CPU the full network is slow, so the
default CPU run uses batch 16 (the protocol's 192 is for GPUs; see bench_gpu.py). The VT-IQA
protocol freezes the backbone for 11 epochs; this benchmark trains everything (`--freeze-epochs 0`),
the costlier step.

    python -m benchmarks.bench_train_step                  # full network, batch 16, CPU
    python -m benchmarks.bench_train_step --quick          # tiny network, smoke run
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_train_step.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import common as C  # noqa: E402

VAL_FRACTION = 0.1
TEST_FRACTION = 0.1


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision(amp: str, device: Any) -> Any:
    """The engine's autocast context for `--amp` on `device` (nullcontext when off)."""
    from iqa_cli.train.precision import amp_dtype, autocast

    return autocast(device, amp_dtype(amp, device))


def resolve(model: str, overrides: dict[str, Any]) -> tuple[Any, Any]:
    from iqa_cli.train.recipes import get_recipe
    from iqa_cli.train.trainer import resolve_config

    recipe = get_recipe("vtiqa")
    return recipe, resolve_config(recipe, tiny=model == "tiny", config_file=None, overrides=overrides)


def engine_overrides(args: Any, device: Any) -> dict[str, Any]:
    return {
        "batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,
        "freeze_epochs": 0,
        "pretrained": "none",
        "epochs": 1,
        "max_steps": args.steps,
        "eval_test": False,
        "val_fraction": VAL_FRACTION,
        "device": str(device),
        "amp": args.amp,
        "log_every": 10**6,
        "preload_gb": 1e6,
        "gpu_cache": getattr(args, "gpu_cache", "auto"),
    }


def engine_training(cache_path: Path, out_dir: Path, args: Any, device: Any) -> dict[str, Any]:
    """The engine's loop on the cache; step times from its progress callbacks."""
    import json

    from iqa_cli.data.cache import open_cache
    from iqa_cli.train.config import to_plain
    from iqa_cli.train.data import make_parts
    from iqa_cli.train.engine import FitContext, Trainer

    recipe, cfg = resolve(args.model, engine_overrides(args, device))
    clock = C.StepClock()
    with open_cache(cache_path) as cache, C.PeakRSS() as peak:
        labels, label_map = recipe.labels(cache, cfg.params, str(cache_path))
        parts = make_parts(cache, "random_0", select_on="val", val_fraction=VAL_FRACTION, seed=0)
        ctx = FitContext(
            recipe=recipe,
            params=cfg.params,
            cfg=cfg.engine,
            dataset=cache,
            labels=labels,
            device=device,
            meta={
                "method": "vtiqa",
                "variant": cfg.params.variant,
                "dataset": "bench",
                "tiny": args.model == "tiny",
                "labels": label_map.to_meta(),
                "params": to_plain(cfg.params),
            },
            tiny=args.model == "tiny",
            progress=clock,
        )
        started = time.perf_counter()
        result = Trainer(ctx, parts, out_dir).fit()
        seconds = time.perf_counter() - started
    steps = clock.intervals("epoch 0", skip=1)
    logged = [json.loads(line) for line in (out_dir / "log.jsonl").read_text(encoding="utf-8").splitlines()]
    return {
        "steps": result.steps,
        "step_times": steps,
        "step_window": clock.window("epoch 0"),
        "engine_images_per_s": logged[0].get("images_per_s"),
        "fit_seconds": seconds,
        "weights": str(result.weights),
        "peak_rss_mb": peak.mb,
        "peak_rss_scope": peak.scope,
        "train_images": int(parts.train.size),
    }


def _inputs(params: Any, batch: int, device: Any) -> tuple[Any, Any]:
    import torch

    g = torch.Generator().manual_seed(0)
    shape = (batch, 3, params.crop_size, params.crop_size)
    return torch.randn(shape, generator=g).to(device), torch.randn(shape, generator=g).to(device)


def bare_training(args: Any, device: Any) -> dict[str, Any]:
    """forward/backward/step of the same network on tensors already in memory."""
    import torch

    recipe, cfg = resolve(args.model, engine_overrides(args, device))
    params = cfg.params
    torch.manual_seed(0)
    with C.PeakRSS() as peak:
        model = recipe.build_model(params, tiny=args.model == "tiny", pretrained=False).to(device)
        model.train()
        optimizer = recipe.make_optimizer(model, params)
        x_global, x_mosaic = _inputs(params, args.batch_size, device)
        target = (1 + 4 * torch.rand(args.batch_size)).to(device)
        times = []
        for step in range(args.steps + 1):
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            with precision(args.amp, device):
                loss = recipe.loss(model(x_global, x_mosaic).float(), target, params)
            loss.backward()
            optimizer.step()
            _sync(device)
            if step:  # the first step warms up (allocations, lazy initialisation)
                times.append(time.perf_counter() - started)
    return {"step_times": times, "peak_rss_mb": peak.mb, "peak_rss_scope": peak.scope, "loss": float(loss.detach())}


def bare_forward(args: Any, device: Any, images: int) -> dict[str, Any]:
    import torch

    recipe, cfg = resolve(args.model, engine_overrides(args, device))
    params = cfg.params
    with C.PeakRSS() as peak:
        model = recipe.build_model(params, tiny=args.model == "tiny", pretrained=False).to(device).eval()
        x_global, x_mosaic = _inputs(params, args.eval_batch_size, device)
        with torch.inference_mode(), precision(args.eval_amp, device):
            model(x_global, x_mosaic)  # warm-up
            _sync(device)
            started, done = time.perf_counter(), 0
            while done < images:
                n = min(args.eval_batch_size, images - done)
                model(x_global[:n], x_mosaic[:n])
                done += n
            _sync(device)
            seconds = time.perf_counter() - started
    return {"images": images, "seconds": seconds, "peak_rss_mb": peak.mb, "peak_rss_scope": peak.scope}


def iqa_eval(cache_path: Path, weights: str, args: Any, device: Any) -> dict[str, Any]:
    from iqa_cli.train.evaluate import EvalOptions, evaluate

    options = EvalOptions(
        method="vtiqa",
        cross=str(cache_path),
        weights=weights,
        device=str(device),
        amp=args.eval_amp,
        batch_size=args.eval_batch_size,
        preload_gb=1e6,
    )
    with C.PeakRSS() as peak:
        started = time.perf_counter()
        report = evaluate(options)
        seconds = time.perf_counter() - started
    return {
        "images": int(report.results[0]["n"]),
        "seconds": seconds,
        "peak_rss_mb": peak.mb,
        "peak_rss_scope": peak.scope,
    }


def eval_loop(cache_path: Path, weights: str, args: Any, device: Any) -> dict[str, Any]:
    """`predict_scores` (the loop inside `iqa eval`) on views prepared beforehand."""
    from iqa_cli.data.cache import open_cache
    from iqa_cli.train.config import apply_values
    from iqa_cli.train.precision import amp_dtype
    from iqa_cli.train.recipes import get_recipe
    from iqa_cli.train.scoring import predict_scores
    from iqa_cli.train.views import ViewStore
    from iqa_cli.train.weights import load_trained

    recipe = get_recipe("vtiqa")
    loaded = load_trained(recipe, weights)
    model = loaded.model.to(device).eval()
    params = apply_values(loaded.params, {"eval_batch_size": args.eval_batch_size}, source="benchmark")
    with open_cache(cache_path) as cache, C.PeakRSS() as peak:
        indices = np.arange(len(cache))
        started = time.perf_counter()
        store = ViewStore(cache, recipe, params, device, indices, budget_bytes=1e15)
        views_seconds = time.perf_counter() - started
        dtype = amp_dtype(args.eval_amp, device)
        predict_scores(recipe, params, model, store, indices[: args.eval_batch_size], device=device, dtype=dtype)
        started = time.perf_counter()
        pred = predict_scores(recipe, params, model, store, indices, device=device, dtype=dtype)
        seconds = time.perf_counter() - started
    return {
        "images": int(pred.size),
        "seconds": seconds,
        "views_seconds": views_seconds,
        "peak_rss_mb": peak.mb,
        "peak_rss_scope": peak.scope,
    }


def main(argv: list[str]) -> int:
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("full", "tiny"), default="full", help="protocol or --tiny network")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch")
    parser.add_argument("--eval-batch-size", type=int, default=64, help="evaluation batch (VT-IQA's test batch)")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps (after one warm-up step)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--amp", default="off", help="mixed precision of training: off, bf16, fp16, auto")
    parser.add_argument("--eval-amp", default="off", help="mixed precision of evaluation (iqa eval's default: off)")
    parser.add_argument(
        "--distinct", type=int, default=64, help="images with their own pixels (the rest: copies with a JPEG comment)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.model, args.batch_size, args.eval_batch_size, args.steps, args.distinct = "tiny", 8, 16, 3, 4
    import torch

    C.torch_setup()
    device = torch.device(args.device)
    label = C.device_label(device)
    bench = C.Bench("train_step", args)
    workdir = C.workdir_of(args)
    # Enough images that one epoch has `steps` batches after the test and validation parts are taken.
    count = math.ceil((args.steps + 1) * args.batch_size / ((1 - TEST_FRACTION) * (1 - VAL_FRACTION))) + 2
    size = {"model": args.model, "batch": args.batch_size, "steps": args.steps, "amp": args.amp}
    with C.scratch_home(workdir):
        folder = C.jpeg_folder(count, C.KONIQ_LIKE, distinct=args.distinct, workdir=workdir)
        cache = C.prepare_cache(
            folder,
            workdir / "caches" / f"train_{folder.root.name}.h5",
            resize="512x384",
            splits=1,
            test_fraction=TEST_FRACTION,
        )
        out_dir = workdir / "runs" / f"train_step_{args.model}_{time.strftime('%Y%m%d-%H%M%S')}"
        engine = bare = None
        try:
            r = engine_training(cache, out_dir, args, device)
            stats = C.summary(r["step_times"])
            engine = bench.emit(
                "train_step.engine",
                size=size,
                device=label,
                seconds=stats["mean"],
                images_per_s=args.batch_size / stats["mean"] if stats["n"] else None,
                step_seconds=stats["mean"],
                step_seconds_median=stats["median"],
                timed_steps=stats["n"],
                engine_logged_images_per_s=r["engine_images_per_s"],
                peak_rss_mb=r["peak_rss_mb"],
                peak_rss_scope=r["peak_rss_scope"],
                method="Trainer.fit: ViewStore batches, train_inputs, forward, loss check, backward, SGD, logging",
                note="seconds = mean step time",
            )
        except Exception as exc:
            bench.error("train_step.engine", exc)
            r = None
        try:
            b = bare_training(args, device)
            stats = C.summary(b["step_times"])
            bare = bench.emit(
                "train_step.bare",
                size=size,
                device=label,
                seconds=stats["mean"],
                images_per_s=args.batch_size / stats["mean"],
                step_seconds=stats["mean"],
                step_seconds_median=stats["median"],
                timed_steps=stats["n"],
                peak_rss_mb=b["peak_rss_mb"],
                peak_rss_scope=b["peak_rss_scope"],
                method="model(x_global, x_mosaic) -> L1 -> backward -> SGD step on tensors in memory",
                note="seconds = mean step time",
            )
        except Exception as exc:
            bench.error("train_step.bare", exc)
        if engine and bare:
            bench.compare(
                "train_step.overhead",
                engine,
                bare,
                key="step_seconds",
                target=1.10,
                at_most=True,
                note="engine step time / bare step time (1.10 = 10 % overhead)",
            )
        if r is not None:
            _evaluation(bench, cache, r["weights"], args, device, label)
        shutil.rmtree(out_dir, ignore_errors=True)  # the run's checkpoints (about 200 MB at full size)
    return bench.finish()


def _evaluation(bench: C.Bench, cache: Path, weights: str, args: Any, device: Any, label: str) -> None:
    size = {"model": args.model, "eval_batch": args.eval_batch_size, "amp": args.eval_amp}
    records: dict[str, dict[str, Any]] = {}
    for what, run in (
        ("eval.iqa_eval", lambda: iqa_eval(cache, weights, args, device)),
        ("eval.predict_loop", lambda: eval_loop(cache, weights, args, device)),
    ):
        try:
            result = run()
            records[what] = bench.emit(what, size={**size, "images": result["images"]}, device=label, **result)
        except Exception as exc:
            bench.error(what, exc)
    images = next((r["size"]["images"] for r in records.values()), None)
    if images is None:
        return
    try:
        result = bare_forward(args, device, int(images))
        bare = bench.emit(
            "eval.bare_forward",
            size={**size, "images": images},
            device=label,
            method="model(x_global, x_mosaic) under inference_mode on tensors in memory",
            **result,
        )
    except Exception as exc:
        bench.error("eval.bare_forward", exc)
        return
    for what, record in records.items():
        bench.compare(
            f"{what}.overhead",
            record,
            bare,
            key="seconds",
            target=1.10,
            at_most=True,
            note="time / bare forward time"
            + ("; includes loading the checkpoint and preparing the views" if what == "eval.iqa_eval" else ""),
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
