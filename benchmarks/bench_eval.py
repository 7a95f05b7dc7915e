"""`iqa eval` against the bare network on the CPU, side by side.

* `iqa eval` (the library call `evaluate`: load the checkpoint, read the cache, make the 244/768 px views,
  score, metrics) of full-size VT-IQA with random weights on KonIQ-like images prepared at 512x384, one
  pass over the whole cache (`--cross`); its forward runs on every core (`inference_threads`);
* the bare forward of the same network on the same number of images, on tensors in memory, with every
  core (the same threads), and with one thread (the training policy's count on 2 cores, which
  evaluation used before).

Interleaved A B C for `--rounds` rounds; median and range of each time and of the ratios to the bare
forward with every core.

    python -m benchmarks.bench_eval              # 141 images, 3 rounds
    python -m benchmarks.bench_eval --quick      # tiny network, 16 images, 1 round (a smoke run)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _iqa_eval(cache: Path, weights: Path, batch: int) -> float:
    from iqa_cli.train.evaluate import EvalOptions, evaluate

    options = EvalOptions(method="vtiqa", cross=str(cache), weights=str(weights), device="cpu", batch_size=batch)
    started = time.perf_counter()
    evaluate(options)
    return time.perf_counter() - started


def _bare_forward(weights: Path, images: int, batch: int, threads: int) -> float:
    import torch

    from iqa_cli.train.recipes import get_recipe
    from iqa_cli.train.weights import load_trained

    recipe = get_recipe("vtiqa")
    loaded = load_trained(recipe, weights)
    model, params = loaded.model.eval(), loaded.params
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        side = params.crop_size
        x = torch.rand(batch, 3, side, side)
        with torch.inference_mode():
            model(x[:2], x[:2])  # warm-up
            started, done = time.perf_counter(), 0
            while done < images:
                n = min(batch, images - done)
                model(x[:n], x[:n])
                done += n
            return time.perf_counter() - started
    finally:
        torch.set_num_threads(before)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))
    from benchmarks import common as C

    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=141)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="VT-IQA's test batch")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.rounds = 16, 1
    from iqa_cli.threads import torch_threads

    workdir = C.workdir_of(args)
    with C.scratch_home(workdir):
        folder = C.jpeg_folder(args.images, C.KONIQ_LIKE, distinct=min(64, args.images), workdir=workdir)
        cache = C.prepare_cache(folder, workdir / "caches" / f"eval_{args.images}.h5", resize="512x384", splits=1)
        weights = C.vtiqa_checkpoint(workdir / f"eval_vtiqa_{'tiny' if args.quick else 'full'}.safetensors", args.quick)
        cores = torch_threads(own_threads=0)
        times: dict[str, list[float]] = {
            "iqa eval": [],
            f"bare forward, {cores} thread(s)": [],
            "bare forward, 1 thread": [],
        }
        names = list(times)
        for _ in range(args.rounds):  # A B C, A B C, ...
            times[names[0]].append(_iqa_eval(cache, weights, args.batch_size))
            times[names[1]].append(_bare_forward(weights, args.images, args.batch_size, cores))
            times[names[2]].append(_bare_forward(weights, args.images, args.batch_size, 1))
    bare = times[names[1]]
    report = {
        "bench": "eval",
        "machine": f"{len(os.sched_getaffinity(0))} cores",
        "network": "VT-IQA " + ("tiny" if args.quick else "full size"),
        "images": f"{args.images} KonIQ-like, prepared at 512x384",
        "rounds": args.rounds,
        "seconds": {name: C.median_range(values) for name, values in times.items()},
        "ratio_to_bare_forward": {
            name: C.median_range([t / b for t, b in zip(times[name], bare, strict=True)])
            for name in names
            if name != names[1]
        },
        "target": 1.10,
        "quick": args.quick,
    }
    C.print_record(report, args.jsonl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
