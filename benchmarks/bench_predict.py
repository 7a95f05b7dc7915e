"""`iqa predict` on a folder of photos: its overhead over the bare network, and its peak memory.

* `predict_files` (what `iqa predict` calls: load the checkpoint, decode in worker processes with
  decode-time reduction, make the views on the device in batches, score) on a folder of KonIQ-like
  1024x768 JPEGs, against the bare forward of the same network on the same views prepared beforehand,
  at the same torch thread count (every core); non-forward share = 1 - forward / predict. Also the
  serial decode (`workers=1`) for comparison.
  Interleaved A B C A B C for `--rounds` rounds; median and range.
* Peak memory (each in its own process, `ru_maxrss`): batches of 16 against one image at a time.

    python -m benchmarks.bench_predict               # full-size VT-IQA, 64 photos, 3 rounds
    python -m benchmarks.bench_predict --quick       # tiny network, 8 photos, 1 round (a smoke run)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bare_forward(weights: Path, files: list[Path], batch: int) -> float:
    """Seconds of the network alone on the test inputs of `files`, prepared beforehand, with as many torch
    threads as `iqa predict` gives its forward (every core iqa may use)."""
    import torch

    from iqa_cli.threads import inference_threads
    from iqa_cli.train.predict import read_image
    from iqa_cli.train.recipes import get_recipe
    from iqa_cli.train.weights import load_trained

    recipe = get_recipe("vtiqa")
    loaded = load_trained(recipe, weights)
    model, params = loaded.model.eval(), loaded.params
    bound = recipe.view_bound(params)
    batches = []
    with torch.inference_mode():
        for start in range(0, len(files), batch):
            images = [
                torch.from_numpy(read_image(p, bound).copy()).permute(2, 0, 1) for p in files[start : start + batch]
            ]
            batches.append(recipe.eval_inputs(recipe.stored_views(images, params), params))
        with inference_threads(torch.device("cpu")):
            recipe.predict_batch(model, batches[0], params)  # warm-up at this thread count
            started = time.perf_counter()
            for inputs in batches:
                recipe.predict_batch(model, inputs, params)
            return time.perf_counter() - started


def _predict(weights: Path, folder: Path, batch: int, workers: int | None) -> float:
    from iqa_cli.train.predict import predict_files

    started = time.perf_counter()
    predict_files("vtiqa", str(weights), [folder], batch_size=batch, device="cpu", workers=workers)
    return time.perf_counter() - started


def _peak_mb(weights: Path, folder: Path, batch: int) -> float:
    """Peak RSS (MiB) of a fresh process that runs `predict_files` with this batch size."""
    code = (
        "import resource, sys; from iqa_cli.train.predict import predict_files; "
        f"predict_files('vtiqa', {str(weights)!r}, [{str(folder)!r}], batch_size={batch}, device='cpu'); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=REPO)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    from benchmarks import common as C

    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.quick:
        args.photos, args.rounds = 8, 1

    workdir = C.workdir_of(args)
    folder = C.jpeg_folder(args.photos, C.KONIQ_LIKE, distinct=min(16, args.photos), workdir=workdir).root
    files = sorted(folder.glob("*.jpg"))
    weights = C.vtiqa_checkpoint(workdir / f"predict_vtiqa_{'tiny' if args.quick else 'full'}.safetensors", args.quick)
    times: dict[str, list[float]] = {"predict": [], "predict, serial decode": [], "bare forward": []}
    for _ in range(args.rounds):  # A B C, A B C, ...
        times["predict"].append(_predict(weights, folder, args.batch_size, None))
        times["predict, serial decode"].append(_predict(weights, folder, args.batch_size, 1))
        times["bare forward"].append(_bare_forward(weights, files, args.batch_size))
    share = [1 - f / p for f, p in zip(times["bare forward"], times["predict"], strict=True)]
    serial_share = [1 - f / p for f, p in zip(times["bare forward"], times["predict, serial decode"], strict=True)]
    batched, single = _peak_mb(weights, folder, args.batch_size), _peak_mb(weights, folder, 1)
    report = {
        "bench": "predict",
        "machine": f"{len(os.sched_getaffinity(0))} cores",
        "network": "VT-IQA " + ("tiny" if args.quick else "full size"),
        "photos": f"{args.photos} x 1024x768 JPEG",
        "rounds": args.rounds,
        "seconds": {name: C.median_range(values) for name, values in times.items()},
        "non_forward_share": C.median_range(share),
        "non_forward_share_serial_decode": C.median_range(serial_share),
        "target_non_forward_share": 0.10,
        "peak_mb": {f"batch {args.batch_size}": round(batched), "one image at a time": round(single)},
        "peak_ratio": round(batched / single, 3),
        "target_peak_ratio": 1.10,
        "quick": args.quick,
    }
    C.print_record(report, args.jsonl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
