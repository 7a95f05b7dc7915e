"""GPU throughput of VT-IQA and IEIT: bf16 with SDPA against fp32 eager, MFU, and whether the GPU
waits on data. Without a CUDA device it prints one line, `"skipped": "no CUDA device"`, and exits 0.

1. models, bare (input tensors already on the GPU), at the papers' batch sizes on one GPU:
   VT-IQA training (batch 192: forward of both views, L1, backward, SGD) and evaluation (64);
   IEIT stage 1 (146: both regressors, MSE + MSE, everything trains), stage 2 (210: encoder 1
   frozen, the image's features without gradients, the low-quality pair with them, L1 + L1) and
   evaluation (128). Each in `bf16_sdpa` (autocast bf16, timm's fused attention =
   `scaled_dot_product_attention`), `fp32_eager` (float32, attention written out as matmul +
   softmax; PyTorch's default float32 matmul precision, no TF32) and, for training, `bf16_sdpa_fused`
   (the same with the fused SGD kernel). Timed with CUDA events over `--steps` steps after `--warmup`.
   FLOPs per image come from `torch.utils.flop_counter.FlopCounterMode` (forward + backward, counted
   once in fp32 eager, the same arithmetic in every mode); MFU = achieved FLOP/s / the device's dense
   peak for that precision (`--peak-tflops` overrides the table below). Target: bf16_sdpa >= 3x fp32_eager.
2. the engine's VT-IQA training step (`Trainer`, batch 192, bf16, views preloaded in host memory
   and sent through the pinned staging buffers: `--gpu-cache off`, so this is the host path even where
   the views would fit on the GPU) on a generated KonIQ-like cache; GPU busy fraction = the bare bf16
   step's GPU time (CUDA events) / the engine's step wall time (target >= 0.90), plus NVML's utilisation sampled during
   the steps where pynvml is installed. `iqa eval`'s loop (`predict_scores`) against the bare
   forward, in fp32 (iqa eval's default) and bf16.
3. a GPU-resident cache: the stored views kept on the GPU as uint8, batches gathered and cropped
   there (no host work per batch); delivery rate against the host `ViewStore` (pinned staging), and a full
   training step fed from it against the engine's.

    python -m benchmarks.bench_gpu                 # on a machine with a CUDA GPU (about 5 minutes)
    python -m benchmarks.bench_gpu --quick         # smaller batches and fewer steps
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_gpu.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common as C  # noqa: E402

# Dense peak TFLOP/s by device name (vendor data sheets, no sparsity): (name part, bf16, tf32, fp32).
# More specific names first ("H100 PCIe" before "H100", "L40S" before "L4", "A100" before "A10").
PEAKS = (
    ("H200", 989.4, 494.7, 66.9),
    ("H100 PCIe", 756.0, 378.0, 51.2),
    ("H100", 989.4, 494.7, 66.9),
    ("A100", 312.0, 156.0, 19.5),
    ("L40S", 362.1, 181.0, 91.6),
    ("L4", 121.0, 60.0, 30.3),
    ("A10", 125.0, 62.5, 31.2),
)
MODES = ("bf16_sdpa", "fp32_eager")
SIZE = 224  # network input side of both methods


def peak_tflops(name: str, mode: str, override: float | None) -> float | None:
    if override:
        return override
    import torch

    for part, bf16, tf32, fp32 in PEAKS:
        if part.lower() in name.lower():
            if mode.startswith("bf16"):
                return bf16
            return tf32 if torch.get_float32_matmul_precision() != "highest" else fp32
    return None


def set_attention(model: Any, fused: bool) -> None:
    """timm's attention blocks: fused (SDPA) or written out (matmul, softmax, matmul)."""
    for module in model.modules():
        if hasattr(module, "fused_attn"):
            module.fused_attn = fused


# ------------------------------------------------------------------------------- bare workloads


class Workload:
    """One method's step on inputs already on the GPU: `build()` -> (model, step function)."""

    def __init__(self, name: str, model: str, batch: int, train: bool, inputs: int) -> None:
        self.name, self.model, self.batch, self.train, self.inputs = name, model, batch, train, inputs

    def make_inputs(self, batch: int, device: Any) -> list[Any]:
        import torch

        g = torch.Generator(device=device).manual_seed(0)
        return [torch.randn((batch, 3, SIZE, SIZE), device=device, generator=g) for _ in range(self.inputs)]

    def build(self, device: Any, batch: int, fused_optimizer: bool) -> tuple[Any, Callable[[], Any]]:
        import torch
        import torch.nn.functional as F

        from iqa_cli.models import create

        torch.manual_seed(0)
        model = create(self.model).to(device)
        x = self.make_inputs(batch, device)
        y = 1 + 4 * torch.rand(batch, device=device)
        y_poor = 1 + torch.rand(batch, device=device)
        if not self.train:
            model.eval()

            def forward() -> Any:
                with torch.inference_mode():
                    return model(x[0], x[1])

            return model, forward
        model.train()
        if self.name == "ieit.stage2":
            model.encoder1.requires_grad_(False)
        trainable = [p for p in model.parameters() if p.requires_grad]
        extra = {"fused": True} if fused_optimizer else {}
        optimizer = torch.optim.SGD(trainable, lr=1e-3, momentum=0.0, weight_decay=1e-3, **extra)

        def loss_of() -> Any:
            if self.name == "vtiqa.train":
                return F.l1_loss(model(x[0], x[1]).reshape(-1).float(), y)
            if self.name == "ieit.stage1":
                s1, s2 = model.forward_both(x[0], x[1])
                return F.mse_loss(s1.reshape(-1).float(), y) + F.mse_loss(s2.reshape(-1).float(), y)
            # IEIT stage 2 (methods spec 2.5): the image's features without gradients, the poor pair's with.
            with torch.no_grad():
                f1, f2i, f2e = model.encoder1(x[0]), model.encoder2(x[0]), model.encoder2(x[1])
            fpi, fpe = model.encoder2(x[2]), model.encoder2(x[3])
            s1 = model.regressor1(torch.cat([f1, f2i, f2e], dim=1))
            s2 = model.regressor2(torch.cat([fpi, fpe], dim=1))
            return F.l1_loss(s1.reshape(-1).float(), y) + F.l1_loss(s2.reshape(-1).float(), y_poor)

        def step() -> Any:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_of()
            loss.backward()
            optimizer.step()
            return loss

        return model, step


WORKLOADS = (
    Workload("vtiqa.train", "vtiqa", 192, True, 2),
    Workload("vtiqa.eval", "vtiqa", 64, False, 2),
    Workload("ieit.stage1", "ieit", 146, True, 2),
    Workload("ieit.stage2", "ieit", 210, True, 4),
    Workload("ieit.eval", "ieit", 128, False, 2),
)


def _autocast(mode: str) -> Any:
    import contextlib

    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16) if mode.startswith("bf16") else contextlib.nullcontext()


def flops_per_image(work: Workload, device: Any) -> float:
    """FLOPs of one image's step (forward, and backward when training), counted in fp32 eager at batch 2."""
    from torch.utils.flop_counter import FlopCounterMode

    model, step = work.build(device, 2, fused_optimizer=False)
    set_attention(model, False)
    with FlopCounterMode(display=False) as counter:
        step()
    total = counter.get_total_flops()
    del model, step
    _free()
    return total / 2


def _free() -> None:
    import torch

    gc.collect()
    torch.cuda.empty_cache()


def time_steps(step: Callable[[], Any], mode: str, warmup: int, steps: int) -> dict[str, float]:
    """GPU seconds per step (CUDA events around `steps` queued steps) and wall seconds per step."""
    import torch

    with _autocast(mode):
        for _ in range(warmup):
            step()
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        wall = time.perf_counter()
        start.record()
        for _ in range(steps):
            step()
        end.record()
        end.synchronize()
        wall = time.perf_counter() - wall
    return {"gpu_step_seconds": start.elapsed_time(end) / 1000 / steps, "wall_step_seconds": wall / steps}


def bare_models(bench: C.Bench, args: argparse.Namespace, device: Any, label: str) -> dict[str, dict[str, Any]]:
    import torch

    name = torch.cuda.get_device_name(device)
    found: dict[str, dict[str, Any]] = {}
    for work in WORKLOADS:
        if work.model not in args.models:
            continue
        batch = min(work.batch, args.max_batch) if args.max_batch else work.batch
        try:
            per_image = flops_per_image(work, device)
        except Exception as exc:
            bench.error(f"gpu.{work.name}.flops", exc)
            per_image = None
        modes = list(MODES) + (["bf16_sdpa_fused"] if work.train else [])
        for mode in modes:
            what = f"gpu.{work.name}.{mode}"
            try:
                model, step = work.build(device, batch, fused_optimizer=mode.endswith("fused"))
                set_attention(model, not mode.startswith("fp32"))
                torch.cuda.reset_peak_memory_stats(device)
                timing = time_steps(step, mode, args.warmup, args.steps)
                memory = torch.cuda.max_memory_allocated(device) / 2**30
                del model, step
                _free()
            except Exception as exc:
                bench.error(what, exc)
                _free()
                continue
            seconds = timing["gpu_step_seconds"]
            achieved = per_image * batch / seconds / 1e12 if per_image else None
            peak = peak_tflops(name, mode, args.peak_tflops)
            bf16_peak = peak_tflops(name, "bf16", args.peak_tflops)
            found[what] = bench.emit(
                what,
                size={"batch": batch, "input": f"{work.inputs} x 3x{SIZE}x{SIZE}"},
                device=label,
                seconds=seconds,
                images_per_s=batch / seconds,
                wall_step_seconds=timing["wall_step_seconds"],
                peak_gpu_memory_gib=memory,
                gflops_per_image=per_image / 1e9 if per_image else None,
                achieved_tflops=achieved,
                peak_tflops=peak,
                mfu=achieved / peak if achieved and peak else None,
                mfu_vs_bf16_peak=achieved / bf16_peak if achieved and bf16_peak else None,
                float32_matmul_precision=torch.get_float32_matmul_precision(),
                note="seconds = GPU time per step (CUDA events)",
            )
        fast, slow = found.get(f"gpu.{work.name}.bf16_sdpa"), found.get(f"gpu.{work.name}.fp32_eager")
        if fast and slow:
            bench.compare(f"gpu.{work.name}.speedup", fast, slow, target=3.0, note="bf16_sdpa vs fp32_eager")
    return found


# ------------------------------------------------------------------------------ engine on the GPU


class Utilisation:
    """NVML's GPU utilisation (percent of time a kernel ran), sampled in a thread, with timestamps."""

    def __init__(self, device: Any, interval: float = 0.1) -> None:
        self.device, self.interval = device, interval
        self.samples: list[tuple[float, float]] = []
        self.available = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-nvml")

    def _run(self) -> None:
        import torch

        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter(), float(torch.cuda.utilization(self.device))))
            except Exception:  # pynvml missing or NVML unavailable: no samples
                self.available = False
                return
            self._stop.wait(self.interval)

    def between(self, start: float, end: float) -> float | None:
        inside = [u for t, u in self.samples if start <= t <= end]
        return sum(inside) / len(inside) / 100 if inside else None

    def __enter__(self) -> Utilisation:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def engine_section(
    bench: C.Bench, args: argparse.Namespace, device: Any, label: str, bare: dict[str, dict[str, Any]], workdir: Path
) -> None:
    from benchmarks import bench_train_step as T

    batch = min(192, args.max_batch) if args.max_batch else 192
    steps = args.engine_steps
    count = int((steps + 1) * batch / ((1 - T.TEST_FRACTION) * (1 - T.VAL_FRACTION))) + 2
    folder = C.jpeg_folder(count, C.KONIQ_LIKE, distinct=args.distinct, workdir=workdir)
    cache = C.prepare_cache(
        folder,
        workdir / "caches" / f"gpu_{folder.root.name}.h5",
        resize="512x384",
        splits=1,
        test_fraction=T.TEST_FRACTION,
    )
    options = argparse.Namespace(
        model="full", batch_size=batch, eval_batch_size=64, steps=steps, amp="bf16", eval_amp="off", gpu_cache="off"
    )
    out_dir = workdir / "runs" / f"gpu_engine_{time.strftime('%Y%m%d-%H%M%S')}"
    size = {"batch": batch, "steps": steps, "amp": "bf16", "views": "preloaded in host memory, pinned staging"}
    engine = None
    try:
        with Utilisation(device) as util:
            r = T.engine_training(cache, out_dir, options, device)
        stats = C.summary(r["step_times"])
        clock_window = r.get("step_window")
        engine = bench.emit(
            "gpu.engine.vtiqa.train",
            size=size,
            device=label,
            seconds=stats["mean"],
            images_per_s=batch / stats["mean"] if stats["n"] else None,
            step_seconds_median=stats["median"],
            timed_steps=stats["n"],
            engine_logged_images_per_s=r["engine_images_per_s"],
            nvml_utilisation=util.between(*clock_window) if clock_window else None,
            nvml_available=util.available,
            note="seconds = mean engine step (wall)",
        )
    except Exception as exc:
        bench.error("gpu.engine.vtiqa.train", exc)
        return
    reference = bare.get("gpu.vtiqa.train.bf16_sdpa")
    if reference and engine and engine.get("seconds") and reference.get("seconds"):
        busy = reference["seconds"] * batch / reference["size"]["batch"] / engine["seconds"]
        bench.emit(
            "gpu.engine.vtiqa.busy",
            size=size,
            device=label,
            ratio=busy,
            target=0.90,
            target_is="at least",
            meets_target=bool(busy >= 0.90),
            note="bare bf16 step GPU time / engine step wall time (1.0 = the GPU never waits)",
        )
    for amp in ("off", "tf32", "bf16"):  # float32, the GPU default (TF32 products), bf16
        options.eval_amp = amp
        try:
            loop = T.eval_loop(cache, r["weights"], options, device)
            bare_eval = T.bare_forward(options, device, loop["images"])
        except Exception as exc:
            bench.error(f"gpu.eval.{amp}", exc)
            continue
        eval_size = {"eval_batch": 64, "amp": amp, "images": loop["images"]}
        ours = bench.emit("gpu.eval.predict_loop." + amp, size=eval_size, device=label, **loop)
        base = bench.emit("gpu.eval.bare_forward." + amp, size=eval_size, device=label, **bare_eval)
        bench.compare(
            f"gpu.eval.overhead.{amp}",
            ours,
            base,
            key="seconds",
            target=1.10,
            at_most=True,
            note="predict_scores time / bare forward time",
        )
    shutil.rmtree(out_dir, ignore_errors=True)  # the run's checkpoints
    resident_section(bench, args, device, label, cache, batch, engine)


# -------------------------------------------------------------------------- GPU-resident cache


def resident_views(cache_path: Path, recipe: Any, params: Any, device: Any) -> dict[str, Any]:
    """Every image's stored views, computed on the GPU and kept there (uint8)."""
    import numpy as np
    import torch

    from iqa_cli.data.cache import open_cache
    from iqa_cli.train.views import PRELOAD_CHUNK, decode_batch, to_image_list

    with open_cache(cache_path) as cache:
        n = len(cache)
        shapes = recipe.view_shapes(params)
        out = {k: torch.empty((n, *s), dtype=torch.uint8, device=device) for k, s in shapes.items()}
        for start in range(0, n, PRELOAD_CHUNK):
            rows = np.arange(start, min(n, start + PRELOAD_CHUNK))
            batch, sizes = decode_batch(cache, rows)
            views = recipe.stored_views(to_image_list(batch, sizes, device), params)
            for key, tensor in views.items():
                out[key][start : start + rows.size] = tensor
    return out


def resident_section(
    bench: C.Bench,
    args: argparse.Namespace,
    device: Any,
    label: str,
    cache_path: Path,
    batch: int,
    engine: dict[str, Any] | None,
) -> None:
    import numpy as np
    import torch

    from benchmarks.bench_loading import epoch_batches, vtiqa_params
    from iqa_cli.data.cache import open_cache
    from iqa_cli.train.engine import batch_seed
    from iqa_cli.train.views import ViewStore

    recipe, params = vtiqa_params("full", batch)
    size = {"batch": batch, "views": "VT-IQA 244 + 768"}
    try:
        started = time.perf_counter()
        views = resident_views(cache_path, recipe, params, device)
        torch.cuda.synchronize(device)
        build_seconds = time.perf_counter() - started
        n = next(iter(views.values())).shape[0]
        batches = epoch_batches(np.arange(n), batch, 0)
        batches = [b for b in batches if b.size == batch]
        for _ in range(2):  # warm-up, then timed
            torch.cuda.synchronize(device)
            started = time.perf_counter()
            for b, rows in enumerate(batches):
                index = torch.from_numpy(rows).to(device, non_blocking=True)
                picked = {k: v.index_select(0, index) for k, v in views.items()}
                recipe.train_inputs(picked, batch_seed(0, 0, b, len(batches)), params)
            torch.cuda.synchronize(device)
            seconds = time.perf_counter() - started
        resident = bench.emit(
            "gpu.resident.delivery",
            size=size,
            device=label,
            seconds=seconds,
            images=batch * len(batches),
            views_gib=sum(v.numel() for v in views.values()) / 2**30,
            build_seconds=build_seconds,
            method="views on the GPU; index_select + train_inputs per batch",
        )
    except Exception as exc:
        bench.error("gpu.resident.delivery", exc)
        return
    try:
        with open_cache(cache_path) as cache:
            store = ViewStore(cache, recipe, params, device, np.arange(len(cache)), budget_bytes=1e15)
            for _ in range(2):
                torch.cuda.synchronize(device)
                started = time.perf_counter()
                seeds = [batch_seed(0, 0, b, len(batches)) for b in range(len(batches))]
                with store.batches(batches, seeds) as it:  # seeds: crops cut on the host, as in training
                    for b, (_, on_device) in enumerate(it):
                        recipe.train_inputs(on_device, seeds[b], params)
                torch.cuda.synchronize(device)
                seconds = time.perf_counter() - started
            del store
        host = bench.emit(
            "gpu.host_staged.delivery",
            size=size,
            device=label,
            seconds=seconds,
            images=batch * len(batches),
            method="ViewStore preloaded in host memory + pinned staging + BatchIterator + train_inputs",
        )
        bench.compare(
            "gpu.resident.delivery_speedup", resident, host, target=None, note="GPU-resident vs host + pinned staging"
        )
    except Exception as exc:
        bench.error("gpu.host_staged.delivery", exc)
    try:
        step_record = resident_training(bench, args, device, label, views, recipe, params, batches, size)
        if engine and step_record:
            bench.compare(
                "gpu.resident.train_vs_engine",
                step_record,
                engine,
                target=None,
                note="a bare training step fed from the GPU-resident views vs the engine's step",
            )
    except Exception as exc:
        bench.error("gpu.resident.train", exc)
    del views
    _free()


def resident_training(
    bench: C.Bench,
    args: argparse.Namespace,
    device: Any,
    label: str,
    views: dict[str, Any],
    recipe: Any,
    params: Any,
    batches: list[Any],
    size: dict[str, Any],
) -> dict[str, Any]:
    import torch

    from iqa_cli.train.engine import batch_seed

    torch.manual_seed(0)
    model = recipe.build_model(params, tiny=False, pretrained=False).to(device).train()
    optimizer = recipe.make_optimizer(model, params)
    targets = 1 + 4 * torch.rand(next(iter(views.values())).shape[0], device=device)

    def run(limit: int) -> float:
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        for b, rows in enumerate(batches[:limit]):
            index = torch.from_numpy(rows).to(device, non_blocking=True)
            picked = {k: v.index_select(0, index) for k, v in views.items()}
            inputs = recipe.train_inputs(picked, batch_seed(0, 0, b, len(batches)), params)
            optimizer.zero_grad(set_to_none=True)
            with _autocast("bf16"):
                loss = recipe.loss(model(*inputs).float(), targets[index], params)
            loss.backward()
            optimizer.step()
        torch.cuda.synchronize(device)
        return time.perf_counter() - started

    run(min(2, len(batches)))
    steps = min(len(batches), args.steps)
    seconds = run(steps)
    record = bench.emit(
        "gpu.resident.train",
        size={**size, "amp": "bf16", "steps": steps},
        device=label,
        seconds=seconds / steps,
        images_per_s=steps * batches[0].size / seconds,
        note="seconds = step wall time; views on the GPU and cropped there: no host copy per step",
    )
    return record


# ------------------------------------------------------------------------------------------- main


def main(argv: list[str]) -> int:
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--engine-steps", type=int, default=8, help="engine training steps (batch 192)")
    parser.add_argument("--models", default="vtiqa,ieit", help="which methods' networks")
    parser.add_argument("--max-batch", type=int, default=None, help="cap every batch (smaller GPUs)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak for MFU (default: table)")
    parser.add_argument(
        "--distinct",
        type=int,
        default=64,
        help="generated images with their own pixels (the rest: copies with a comment)",
    )
    parser.add_argument("--no-engine", action="store_true", help="skip the engine, eval and resident sections")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.engine_steps, args.distinct = 3, 1, 3, 8
        args.max_batch = args.max_batch or 32
    args.models = {m.strip() for m in args.models.split(",") if m.strip()}
    import torch

    bench = C.Bench("gpu", args)
    if not torch.cuda.is_available():
        bench.skip("gpu", "no CUDA device")
        return bench.finish()
    C.torch_setup()
    device = torch.device("cuda", torch.cuda.current_device())
    label = C.device_label(device)
    workdir = C.workdir_of(args)
    with C.scratch_home(workdir):
        bare = bare_models(bench, args, device, label)
        if not args.no_engine and "vtiqa" in args.models:
            try:
                engine_section(bench, args, device, label, bare, workdir)
            except Exception as exc:
                bench.error("gpu.engine", exc)
    return bench.finish()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
