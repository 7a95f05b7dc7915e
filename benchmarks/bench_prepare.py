"""`iqa prepare` against the naive way, on generated KonIQ-like and SPAQ-like JPEG folders.

Measures (each in a fresh child process, so its peak memory is its own):

* KonIQ-like: N 1024x768 JPEGs -> 512x384. SPAQ-like: N 4000x3000 JPEGs -> short side 512.
  - naive: one process, PIL full decode, bicubic resize, collect in a list, np.stack, np.save;
  - iqa: `build_cache` (what `iqa prepare custom` calls): header pass, decode-time JPEG reduction,
    all cores (`--workers`, default every core), streamed into an HDF5 cache;
  - the speed-up iqa/naive (targets on a 2-core machine: >= 3x KonIQ-like, >= 8x SPAQ-like).
* memory: iqa prepare on two dataset sizes (default 500 and 5000 KonIQ-like images); the peak of
  the main process and of the whole process tree (workers included) must stay within 10 %.
* decode: single-core milliseconds per image of the decode variants behind the numbers (full
  decode, iqa's reduced decode, and a what-if decode reduced straight to the final scale).

The folders hold `--distinct` images with their own pixels, the rest copies of them whose bytes differ
by a JPEG comment (generation of 4000x3000 photographs is slow; byte-identical files would be kept on
one side of every split); every file is read and decoded as usual, from the page cache after the first
pass (warm-cache figures: a cold disk adds the same read time to both ways).

    python -m benchmarks.bench_prepare            # full sizes (a few minutes on 2 cores)
    python -m benchmarks.bench_prepare --quick    # smoke run, well under a minute
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python benchmarks/bench_prepare.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks import common as C  # noqa: E402

MODULE = "benchmarks.bench_prepare"
KONIQ_RESIZE = "512x384"
SPAQ_RESIZE = "short:512"
NAIVE = "one process: PIL full decode, bicubic resize, list, np.stack, np.save"


# ----------------------------------------------------------------------------- child measurements


def _names(csv_path: Path) -> list[str]:
    import csv

    with open(csv_path, encoding="utf-8", newline="") as handle:
        return [row[0] for row in list(csv.reader(handle))[1:]]


def naive_prepare(params: dict[str, Any]) -> dict[str, Any]:
    """The way without iqa: decode every JPEG in full, resize, keep all in a list, save one array."""
    from PIL import Image

    from iqa_cli.data.resize import parse_policy  # only its size arithmetic, so both ways store equal sizes

    folder, out = Path(params["folder"]), Path(params["out"])
    policy = parse_policy(params["resize"])
    started = time.perf_counter()
    images = []
    for name in _names(Path(params["csv"])):
        with Image.open(folder / name) as im:
            rgb = im.convert("RGB")  # full-resolution decode
            size = policy.output_size(*rgb.size)
            images.append(np.asarray(rgb.resize(size, Image.Resampling.BICUBIC)))
    np.save(out, np.stack(images))
    seconds = time.perf_counter() - started
    return {"images": len(images), "seconds": seconds, "bytes": out.stat().st_size}


def iqa_prepare(params: dict[str, Any]) -> dict[str, Any]:
    """`build_cache`, exactly as `iqa prepare custom --root F --size S` runs it (10 splits)."""
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.cache_write import CacheOptions
    from iqa_cli.data.datasets.custom import make_spec
    from iqa_cli.data.decode import default_workers

    folder, out = Path(params["folder"]), Path(params["out"])
    workers = params.get("workers")
    started = time.perf_counter()
    spec = make_spec("bench", Path(params["csv"]), root=folder, native_range=(1.0, 5.0))
    summary = build_cache(spec, folder, out, CacheOptions(resize=params["resize"], workers=workers))
    seconds = time.perf_counter() - started
    return {
        "images": summary.count,
        "seconds": seconds,
        "bytes": summary.bytes,
        "shape": list(summary.shape),
        "workers": min(default_workers() if workers is None else int(workers), summary.count),
    }


MEASUREMENTS = {"naive": naive_prepare, "iqa": iqa_prepare}


# ------------------------------------------------------------------------------- decode variants


def decode_variants(folder: C.JpegFolder, resize: str, images: int, repeat: int) -> dict[str, float]:
    """Single-core ms per image: naive full decode, iqa's decode, and a what-if reduction to the final scale."""
    from PIL import Image

    from iqa_cli.data.decode import decode_image
    from iqa_cli.data.resize import parse_policy

    policy = parse_policy(resize)
    paths = [folder.root / n for n in folder.names()[: max(1, min(images, folder.distinct))]]
    size = policy.output_size(folder.width, folder.height)

    def naive(path: Path) -> None:
        with Image.open(path) as im:
            im.convert("RGB").resize(size, Image.Resampling.BICUBIC)

    def reduced_to_final(path: Path) -> None:
        with Image.open(path) as im:
            im.draft("RGB", size)  # DCT scaling down to the smallest scale >= the final size
            rgb = im.convert("RGB")
            if rgb.size != size:
                rgb.resize(size, Image.Resampling.BICUBIC)

    variants = {
        "naive_full_decode_ms": naive,
        "iqa_decode_ms": lambda path: decode_image(path, size),
        "whatif_draft_to_final_ms": reduced_to_final,
    }
    out: dict[str, float] = {}
    for key, run in variants.items():
        run(paths[0])  # warm the page cache and the decoder
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            for path in paths:
                run(path)
            samples.append((time.perf_counter() - started) / len(paths))
        out[key] = 1000 * min(samples)
    return out


# ------------------------------------------------------------------------------------------ parent


def _size(count: int, source: tuple[int, int], stored: str) -> dict[str, Any]:
    return {"images": count, "source": f"{source[0]}x{source[1]} JPEG", "stored": stored}


def _record(bench: C.Bench, what: str, result: dict[str, Any], size: dict[str, Any], **extra: Any) -> dict[str, Any]:
    workers = result.get("workers")
    per_core = None
    if workers and result.get("seconds"):
        per_core = result["images"] / result["seconds"] / workers
    return bench.emit(
        what,
        size=size,
        seconds=result["seconds"],
        images=result["images"],
        peak_rss_mb=result.get("peak_rss_mb"),
        peak_rss_scope=result.get("peak_rss_scope"),
        peak_tree_mb=result.get("peak_tree_mb"),
        peak_workers_rss_mb=result.get("peak_workers_rss_mb"),
        workers=workers,
        images_per_s_per_core=per_core,
        output_bytes=result.get("bytes"),
        **extra,
    )


def _compare_pair(
    bench: C.Bench,
    label: str,
    folder: C.JpegFolder,
    resize: str,
    target: float,
    workdir: Path,
    workers: int | None,
    naive: bool,
) -> None:
    size = _size(folder.count, (folder.width, folder.height), resize)
    out = workdir / "out"
    out.mkdir(parents=True, exist_ok=True)
    common = {"folder": str(folder.root), "csv": str(folder.csv), "resize": resize}
    ours_file, naive_file = out / f"prepare_{label}.h5", out / f"prepare_{label}_naive.npy"
    try:
        ours = _record(
            bench,
            f"prepare.{label}.iqa",
            C.run_child(MODULE, "iqa", {**common, "out": str(ours_file), "workers": workers}),
            size,
            method="iqa prepare (build_cache): header pass, JPEG draft reduction, worker processes, streamed HDF5",
        )
    finally:
        ours_file.unlink(missing_ok=True)
    if not naive:
        return
    try:
        result = C.run_child(MODULE, "naive", {**common, "out": str(naive_file)})
        base = _record(bench, f"prepare.{label}.naive", result, size, method=NAIVE)
    finally:
        naive_file.unlink(missing_ok=True)
    bench.compare(
        f"prepare.{label}.speedup",
        ours,
        base,
        target=target,
        note=f"iqa with {ours.get('workers')} worker(s) vs the naive single process",
    )


def main(argv: list[str]) -> int:
    if C.child_main(argv, MEASUREMENTS):
        return 0
    parser = C.base_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--koniq", type=int, default=500, help="KonIQ-like images (1024x768 -> 512x384)")
    parser.add_argument("--spaq", type=int, default=100, help="SPAQ-like images (4000x3000 -> short side 512)")
    parser.add_argument(
        "--memory-sizes", default="500,5000", help="two KonIQ-like dataset sizes whose peak memory is compared"
    )
    parser.add_argument(
        "--distinct",
        type=int,
        default=64,
        help="images with their own pixels per folder (the rest: copies with a comment)",
    )
    parser.add_argument("--workers", type=int, default=None, help="iqa prepare's worker processes (default: all cores)")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive baselines")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory comparison")
    args = parser.parse_args(argv)
    if args.quick:
        args.koniq, args.spaq, args.memory_sizes, args.distinct = 12, 3, "12,48", 4
    bench = C.Bench("prepare", args)
    workdir = C.workdir_of(args)
    with C.scratch_home(workdir):
        try:
            koniq = C.jpeg_folder(args.koniq, C.KONIQ_LIKE, distinct=args.distinct, workdir=workdir)
            _compare_pair(bench, "koniq", koniq, KONIQ_RESIZE, 3.0, workdir, args.workers, not args.no_naive)
        except Exception as exc:  # one failed section must not hide the others
            bench.error("prepare.koniq", exc)
        try:
            spaq_distinct = max(1, min(args.distinct // 2, args.spaq))
            spaq = C.jpeg_folder(args.spaq, C.SPAQ_LIKE, distinct=spaq_distinct, workdir=workdir)
            _compare_pair(bench, "spaq", spaq, SPAQ_RESIZE, 8.0, workdir, args.workers, not args.no_naive)
        except Exception as exc:
            bench.error("prepare.spaq", exc)
        if not args.no_memory:
            try:
                _memory(bench, args, workdir)
            except Exception as exc:
                bench.error("prepare.memory", exc)
        try:
            _decode(bench, args, workdir)
        except Exception as exc:
            bench.error("prepare.decode", exc)
    return bench.finish()


def _memory(bench: C.Bench, args: Any, workdir: Path) -> None:
    small, large = sorted(int(v) for v in str(args.memory_sizes).split(","))
    folder = C.jpeg_folder(large, C.KONIQ_LIKE, distinct=args.distinct, workdir=workdir)
    records = []
    for count in (small, large):
        out = workdir / "out" / f"prepare_memory_{count}.h5"
        out.parent.mkdir(parents=True, exist_ok=True)
        params = {
            "folder": str(folder.root),
            "csv": str(C.subset_csv(folder, count)),
            "resize": KONIQ_RESIZE,
            "out": str(out),
            "workers": args.workers,
        }
        try:
            result = C.run_child(MODULE, "iqa", params)
        finally:
            out.unlink(missing_ok=True)
        size = _size(count, C.KONIQ_LIKE, KONIQ_RESIZE)
        records.append(_record(bench, f"prepare.memory.iqa.{count}", result, size))
    low, high = records
    note = f"peak at {large} images / peak at {small} images"
    bench.compare(
        "prepare.memory.growth.main",
        high,
        low,
        key="peak_rss_mb",
        target=1.10,
        at_most=True,
        note="main process; " + note,
    )
    bench.compare(
        "prepare.memory.growth.tree",
        high,
        low,
        key="peak_tree_mb",
        target=1.10,
        at_most=True,
        note="sampled PSS of the main process and its workers; " + note,
    )


def _decode(bench: C.Bench, args: Any, workdir: Path) -> None:
    repeat = 2 if args.quick else 5
    for label, source, resize, distinct in (
        ("koniq", C.KONIQ_LIKE, KONIQ_RESIZE, args.distinct),
        ("spaq", C.SPAQ_LIKE, SPAQ_RESIZE, max(1, min(args.distinct // 2, args.spaq))),
    ):
        count = args.koniq if label == "koniq" else args.spaq
        folder = C.jpeg_folder(count, source, distinct=distinct, workdir=workdir)
        with C.PeakRSS() as peak:
            times = decode_variants(folder, resize, images=8, repeat=repeat)
        bench.emit(
            f"prepare.{label}.decode_single_core",
            size={"images": min(8, folder.distinct), "source": f"{source[0]}x{source[1]} JPEG", "stored": resize},
            seconds=times["iqa_decode_ms"] / 1000,
            images_per_s=1000 / times["iqa_decode_ms"],
            peak_rss_mb=peak.mb,
            peak_rss_scope=peak.scope,
            **times,
            note="ms/image in one process; whatif_* is not what iqa does (see the README)",
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
