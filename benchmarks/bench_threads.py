"""The CPU thread policy: `iqa train vtiqa --tiny` with iqa's default thread count against torch's
old default (every core: `OMP_NUM_THREADS=<cores>`) and against `OMP_NUM_THREADS=1`, quiet and beside
one busy process, interleaved A B C A B C (at least 3 rounds); median and range of each ratio.

    python -m benchmarks.bench_threads               # 3 rounds, 240 images, 3 epochs
    python -m benchmarks.bench_threads --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _cache(folder: Path, n: int) -> Path:
    sys.path.insert(0, str(REPO))
    from tests.train.caches import make_cache

    os.environ["IQA_HOME"] = str(folder / "home")
    out = folder / "home" / "data" / "bench.h5"
    make_cache("bench", folder / "images", out, n=n, splits=1)
    return out


def _run(cache: Path, out: Path, env: dict[str, str], epochs: int) -> float:
    command = [sys.executable, "-m", "iqa_cli", "train", "vtiqa", "--tiny", "--device", "cpu", "--data", str(cache),
               "--epochs", str(epochs), "--freeze-epochs", "0", "--batch-size", "16", "--out", str(out)]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cache = _cache(folder, args.images)
        base = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        settings = {
            "iqa default": base,
            f"all cores ({cores})": {**base, "OMP_NUM_THREADS": str(cores)},
            "OMP_NUM_THREADS=1": {**base, "OMP_NUM_THREADS": "1"},
        }
        report = {"machine": f"{cores} cores", "rounds": args.rounds, "images": args.images, "epochs": args.epochs}
        for load in ("quiet", "beside a busy process"):
            busy = None
            if load != "quiet":
                busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                times: dict[str, list[float]] = {name: [] for name in settings}
                for r in range(args.rounds):
                    for name, env in settings.items():
                        times[name].append(_run(cache, folder / f"run-{load[:5]}-{r}-{len(times[name])}-{name[:3]}",
                                                env, args.epochs))  # fmt: skip
            finally:
                if busy is not None:
                    busy.kill()
            default = times["iqa default"]
            ratios = {}
            for name, values in times.items():
                if name == "iqa default":
                    continue
                pair = [d / v for d, v in zip(default, values, strict=True)]  # < 1: the default is faster
                ratios[f"default / {name}"] = {
                    "median": round(statistics.median(pair), 3),
                    "range": [round(min(pair), 3), round(max(pair), 3)],
                }
            report[load] = {"seconds": {k: [round(v, 2) for v in vs] for k, vs in times.items()}, "ratios": ratios}
            print(json.dumps({load: report[load]}), flush=True)
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
