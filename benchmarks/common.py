"""What every benchmark script shares: JSON lines and the human table, peak memory, the environment,
generated KonIQ-/SPAQ-like JPEG folders, small caches, measurement child processes, step clocks.

Output: each measurement is one JSON line on stdout (also appended to `--jsonl FILE`); the human
table (Markdown, so it pastes into benchmarks/README.md) goes to stderr at the end. Every line has
the keys in `RECORD_KEYS`; comparisons add `ratio`, `target` and `meets_target`.

Peak memory without psutil: on Linux the kernel's high-water mark `VmHWM` (/proc/self/status) can
be reset by writing "5" to /proc/self/clear_refs, so each measurement reports its own peak even in
a long-lived process (`PeakRSS`). Elsewhere `resource.getrusage` gives the process's peak so far
(reported with `peak_rss_scope: "process"`). Measurements that start worker processes run in a fresh
child process (`run_child`), which reports its own peak, its largest worker's peak, and the sampled
peak of the proportional set size (PSS) summed over the whole process tree.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RECORD_KEYS = ("bench", "what", "size", "seconds", "images_per_s", "peak_rss_mb", "device", "versions", "quick")
RESULT_TAG = "@@result "  # a child process's result line
KONIQ_LIKE = (1024, 768)  # KonIQ-10k's 1024x768 release
SPAQ_LIKE = (4000, 3000)  # SPAQ: full smartphone resolution (about 4000x3000)
MIB = 2**20
# Version keys of the JSON lines -> the installed distributions they are read from.
DISTRIBUTIONS = {
    "iqa": "iqa-cli",
    "torch": "torch",
    "torchvision": "torchvision",
    "timm": "timm",
    "numpy": "numpy",
    "pillow": "pillow",
    "h5py": "h5py",
}


# ------------------------------------------------------------------------------------- environment


def _version(distribution: str) -> str | None:
    """Installed version, read from the package metadata (importing torch just to ask costs seconds)."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if done.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "-uno"], capture_output=True, text=True)
    return done.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


_VERSIONS: dict[str, Any] | None = None


def versions() -> dict[str, Any]:
    """Versions of what the figures depend on (computed once per process)."""
    global _VERSIONS
    if _VERSIONS is None:
        found: dict[str, Any] = {"python": platform.python_version()}
        for key, distribution in DISTRIBUTIONS.items():
            found[key] = _version(distribution)
        try:
            from PIL import features

            found["libjpeg_turbo"] = bool(features.check_feature("libjpeg_turbo"))
        except Exception:
            found["libjpeg_turbo"] = None
        if found["iqa"] is None:  # run from a source tree (PYTHONPATH) rather than installed
            try:
                import iqa_cli

                found["iqa"] = iqa_cli.__version__
            except ImportError:
                pass
        found["git"] = _git_commit()
        _VERSIONS = found
    out = dict(_VERSIONS)
    if "torch" in sys.modules:  # settings that matter only where torch runs, read without importing it
        torch = sys.modules["torch"]
        out["torch_cuda"] = torch.version.cuda
        out["torch_threads"] = torch.get_num_threads()
    return out


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine() -> dict[str, Any]:
    """The machine a run happened on (written at the head of the table)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {
        "cpu": _cpu_model(),
        "cores": cores(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "load_average_1min": None if load is None else round(load, 2),
    }


def device_label(device: Any = "cpu") -> str:
    """'cpu (N cores: model)' or 'cuda:0 (NVIDIA H200)'."""
    text = str(device)
    if text.startswith("cuda"):
        import torch

        index = torch.device(text).index or 0
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({cores()} cores: {_cpu_model()})"


# ------------------------------------------------------------------------------------------ memory


def _status_kib(field: str, pid: int | str = "self") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _maxrss_mb(who: int) -> float:
    import resource

    value = resource.getrusage(who).ru_maxrss
    return value / MIB if sys.platform == "darwin" else value / 1024  # bytes on macOS, KiB elsewhere


def current_rss_mb() -> float | None:
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


class PeakRSS:
    """Peak resident memory of this process during a `with` block (MiB in `.mb`).

    On Linux the kernel's high-water mark is reset on entry, so the value is this block's own peak
    (`.scope == "measurement"`); elsewhere it is the process's peak so far (`.scope == "process"`).
    """

    def __init__(self) -> None:
        self.mb: float | None = None
        self.scope = "process"

    def __enter__(self) -> PeakRSS:
        try:
            Path("/proc/self/clear_refs").write_text("5", encoding="utf-8")
            self.scope = "measurement" if _status_kib("VmHWM") is not None else "process"
        except OSError:
            self.scope = "process"
        return self

    def __exit__(self, *exc: object) -> None:
        kib = _status_kib("VmHWM") if self.scope == "measurement" else None
        self.mb = kib / 1024 if kib is not None else _maxrss_mb(0)  # resource.RUSAGE_SELF == 0


def peak_children_rss_mb() -> float:
    """Largest peak RSS of any child process this process waited for (its workers)."""
    import resource

    return _maxrss_mb(resource.RUSAGE_CHILDREN)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text(encoding="utf-8")
            found.extend(int(c) for c in text.split())
    except OSError:
        pass
    return found


def _pss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text(encoding="utf-8").splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return _status_kib("VmRSS", pid)


class TreeMemorySampler:
    """Samples the memory of a process and all its descendants (PSS where readable, else RSS) in a
    thread; `.peak_mb` is the largest sum seen (None where /proc is unavailable)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid, self.interval = pid, interval
        self.peak_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-memory")

    def _sample(self) -> float | None:
        pending, total, seen = [self.pid], 0, False
        while pending:
            pid = pending.pop()
            kib = _pss_kib(pid)
            if kib is not None:
                total, seen = total + kib, True
            pending.extend(_children(pid))
        return total / 1024 if seen else None

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self._sample()
            if value is not None and (self.peak_mb is None or value > self.peak_mb):
                self.peak_mb = value
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemorySampler:
        if Path(f"/proc/{self.pid}").exists():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


# ----------------------------------------------------------------------------------------- records


def rounded(value: Any, digits: int = 4) -> Any:
    """Floats rounded to `digits` significant digits (JSON stays readable); NaN/inf become None."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def size_text(size: Any) -> str:
    if isinstance(size, dict):
        return ", ".join(f"{k} {v}" for k, v in size.items())
    return str(size)


def print_record(record: dict[str, Any], jsonl: Path | None) -> None:
    """One measurement as a JSON line on stdout, also appended to `jsonl` when given."""
    line = json.dumps(record, sort_keys=False)
    print(line, flush=True)
    if jsonl is not None:
        jsonl.parent.mkdir(parents=True, exist_ok=True)
        with open(jsonl, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


class Bench:
    """Collects one script's measurements: prints each as a JSON line, the table at the end."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name, self.args = name, args
        self.quick = bool(getattr(args, "quick", False))
        self.records: list[dict[str, Any]] = []
        self.failures = 0
        self.jsonl = Path(args.jsonl) if getattr(args, "jsonl", None) else None

    def emit(
        self,
        what: str,
        *,
        size: Any,
        seconds: float | None = None,
        images: float | None = None,
        images_per_s: float | None = None,
        peak_rss_mb: float | None = None,
        device: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        if images_per_s is None and images is not None and seconds:
            images_per_s = images / seconds
        record = {
            "bench": self.name,
            "what": what,
            "size": size,
            "seconds": seconds,
            "images_per_s": images_per_s,
            "peak_rss_mb": peak_rss_mb,
            "device": device or device_label("cpu"),
            "versions": versions(),
            "quick": self.quick,
            **extra,
            "time": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        }
        record = rounded(record)
        self.records.append(record)
        print_record(record, self.jsonl)
        return record

    def compare(
        self,
        what: str,
        ours: dict[str, Any],
        baseline: dict[str, Any],
        *,
        target: float | None,
        key: str = "images_per_s",
        higher_is_better: bool = True,
        at_most: bool = False,
        note: str = "",
        **extra: Any,
    ) -> dict[str, Any]:
        """A ratio line: ours[key] / baseline[key] (inverted when lower values are better). The target
        is a floor (ratio >= target), or a ceiling with `at_most` (e.g. memory growth <= 1.10)."""
        a, b = ours.get(key), baseline.get(key)
        ratio = None
        if a and b:
            ratio = a / b if higher_is_better else b / a
        meets = None
        if ratio is not None and target is not None:
            meets = bool(ratio <= target) if at_most else bool(ratio >= target)
        return self.emit(
            what,
            size=ours.get("size"),
            device=ours.get("device"),
            ratio=ratio,
            target=target,
            target_is="at most" if at_most else "at least",
            meets_target=meets,
            ours=ours.get("what"),
            baseline=baseline.get("what"),
            compared=key,
            note=note,
            **extra,
        )

    def skip(self, what: str, reason: str, **extra: Any) -> dict[str, Any]:
        return self.emit(what, size=None, skipped=reason, **extra)

    def error(self, what: str, exc: BaseException, **extra: Any) -> dict[str, Any]:
        self.failures += 1
        text = " ".join(str(exc).split()) or type(exc).__name__
        return self.emit(what, size=None, error=f"{type(exc).__name__}: {text}", **extra)

    def finish(self) -> int:
        print_table(self.records, title=f"benchmarks/{self.name}", stream=sys.stderr)
        return 1 if self.failures else 0


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def _target_cell(record: dict[str, Any]) -> str:
    if record.get("target") is None:
        return ""
    return ("<= " if record.get("target_is") == "at most" else ">= ") + _cell(record["target"])


def table_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    """The records as a Markdown table: what, size, images/s, seconds, peak RSS, ratio, target, notes."""
    header = ["what", "size", "images/s", "seconds", "peak RSS MiB", "ratio", "target", "notes"]
    rows = []
    for r in records:
        notes = r.get("skipped") or r.get("error") or r.get("note") or ""
        if r.get("ratio") is not None and r.get("meets_target") is not None:
            notes = ("meets target" if r["meets_target"] else "BELOW target") + (f"; {notes}" if notes else "")
        rows.append(
            [
                str(r.get("what", "")),
                size_text(r.get("size")) if r.get("size") is not None else "",
                _cell(r.get("images_per_s")),
                _cell(r.get("seconds")),
                _cell(r.get("peak_rss_mb")),
                _cell(r.get("ratio")),
                _target_cell(r),
                str(notes),
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(row) for row in rows)]


def print_table(records: Sequence[dict[str, Any]], *, title: str, stream: Any = sys.stderr) -> None:
    info = machine()
    device = next((r.get("device") for r in records if r.get("device")), device_label("cpu"))
    print(f"\n### {title}\n", file=stream)
    print(
        f"Machine: {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, {info['os']}; device {device}; "
        f"load average {info['load_average_1min']} at the end",
        file=stream,
    )
    v = versions()
    print(
        f"Versions: iqa {v.get('iqa')} ({v.get('git')}), torch {v.get('torch')}, numpy {v.get('numpy')}, "
        f"pillow {v.get('pillow')} (libjpeg-turbo {v.get('libjpeg_turbo')}), h5py {v.get('h5py')}, "
        f"python {v.get('python')}\n",
        file=stream,
    )
    for text in table_lines(records):
        print(text, file=stream)
    stream.flush()


# ------------------------------------------------------------------------------------------ timing


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Median, mean and spread of timing samples (seconds)."""
    values = [float(s) for s in samples]
    if not values:
        return {"median": math.nan, "mean": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


class StepClock:
    """A `iqa_cli.progress.Progress` that timestamps every `advance` (one per training step in the
    engine's loop), so a benchmark reads the engine's own step times without touching the engine."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.sync = sync
        self.phases: list[tuple[str, list[float]]] = []
        self.messages: list[str] = []

    def start(self, description: str, total: int | None) -> None:
        self.phases.append((description, [time.perf_counter()]))

    def advance(self, n: int = 1) -> None:
        if self.phases and n:
            self.phases[-1][1].append(time.perf_counter())

    def log(self, message: str) -> None:
        self.messages.append(message)

    def finish(self) -> None:
        pass

    def window(self, contains: str) -> tuple[float, float] | None:
        """perf_counter() of the first and last step of the phases whose description contains `contains`."""
        stamps = [t for description, times in self.phases if contains in description for t in times[1:]]
        return (min(stamps), max(stamps)) if len(stamps) >= 2 else None

    def intervals(self, contains: str, skip: int = 1) -> list[float]:
        """Seconds between consecutive steps of the phases whose description contains `contains`,
        without the first `skip` intervals of each phase (start-up: the prefetch thread, allocator)."""
        found: list[float] = []
        for description, stamps in self.phases:
            if contains in description:
                steps = np.diff(np.asarray(stamps[1:])).tolist()
                found.extend(steps[skip:] if len(steps) > skip else steps)  # too few steps: keep them all
        return found


# ---------------------------------------------------------------------------------- generated data


def default_workdir() -> Path:
    return Path(os.environ.get("IQA_BENCH_DIR") or Path(tempfile.gettempdir()) / "iqa-bench")


def synthetic_photo(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A photograph-like uint8 RGB image: smooth colour fields, hard-edged shapes and fine grain, so
    its JPEG has a realistic size and decode cost (random noise alone would be far larger and slower)."""
    from PIL import Image, ImageDraw

    coarse = rng.integers(0, 256, size=(max(2, height // 96), max(2, width // 96), 3), dtype=np.uint8)
    canvas = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(8, 20))):
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1 + 1, y1 + 1), fill=colour)
    image = np.asarray(canvas, dtype=np.int16)
    tile = rng.integers(-10, 11, size=(256, 256, 1), dtype=np.int16)  # grain, tiled (cheap at 12 MP)
    reps = (-(-height // 256), -(-width // 256), 3)
    grain = np.tile(tile, reps)[:height, :width]
    return np.clip(image + grain, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class JpegFolder:
    """A generated dataset folder: `count` JPEGs (`distinct` of them with their own pixels, the rest copies
    of those whose bytes differ by a JPEG comment, so no two files are byte-identical and `iqa prepare`
    splits them as distinct images) and `scores.csv` with name,score (uniform 1-5)."""

    root: Path
    count: int
    width: int
    height: int
    distinct: int

    @property
    def csv(self) -> Path:
        return self.root / "scores.csv"

    def names(self) -> list[str]:
        with open(self.csv, encoding="utf-8", newline="") as handle:
            return [row[0] for row in list(csv.reader(handle))[1:]]

    def bytes_on_disk(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("*.jpg"))


def _commented_copy(source: Path, target: Path, index: int) -> None:
    """`source` with a JPEG comment segment (COM, FFFE) naming `index` after its start marker: the same
    pixels, other bytes (a hard link would be a byte-identical file, which `iqa prepare` keeps on one
    side of every split)."""
    data = source.read_bytes()
    comment = f"iqa benchmark copy {index}".encode()
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    target.write_bytes(data[:2] + segment + data[2:])


def _pool(workdir: Path, width: int, height: int, distinct: int, quality: int, seed: int) -> Path:
    from PIL import Image

    pool = workdir / f"pool_{width}x{height}_d{distinct}_q{quality}_s{seed}"
    if (pool / ".complete").is_file():
        return pool
    partial = workdir / f".{pool.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for i in range(distinct):
        rng = np.random.default_rng([seed, width, height, i])
        Image.fromarray(synthetic_photo(rng, width, height)).save(partial / f"u{i:05d}.jpg", quality=quality)
    (partial / ".complete").write_text("ok\n", encoding="utf-8")
    shutil.rmtree(pool, ignore_errors=True)
    os.replace(partial, pool)
    return pool


def jpeg_folder(
    count: int,
    size: tuple[int, int] = KONIQ_LIKE,
    *,
    distinct: int = 64,
    quality: int = 90,
    seed: int = 0,
    workdir: Path | None = None,
    name: str | None = None,
) -> JpegFolder:
    """A folder of `count` generated JPEGs of `size` (w, h), reused when it already exists."""
    width, height = size
    distinct = max(1, min(distinct, count))
    workdir = Path(workdir or default_workdir())
    workdir.mkdir(parents=True, exist_ok=True)
    pool = _pool(workdir, width, height, distinct, quality, seed)
    folder = workdir / (name or f"jpeg_{width}x{height}_n{count}_d{distinct}_q{quality}_s{seed}_c")
    if not (folder / ".complete").is_file():
        partial = workdir / f".{folder.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        rng = np.random.default_rng([seed, count])
        scores = rng.uniform(1.0, 5.0, count)
        with open(partial / "scores.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["name", "score"])
            for i in range(count):
                name_i = f"img_{i:05d}.jpg"
                _commented_copy(pool / f"u{i % distinct:05d}.jpg", partial / name_i, i)
                writer.writerow([name_i, f"{scores[i]:.4f}"])
        (partial / ".complete").write_text("ok\n", encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(partial, folder)
    return JpegFolder(folder, count, width, height, distinct)


def subset_csv(folder: JpegFolder, count: int) -> Path:
    """A CSV naming the first `count` images of `folder` (for 1x/2x/4x runs on one folder)."""
    if count > folder.count:
        raise ValueError(f"{folder.root} holds {folder.count} images, fewer than {count}")
    path = folder.root.parent / f"{folder.root.name}_first{count}.csv"
    if not path.is_file():
        with open(folder.csv, encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))[1 : count + 1]
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["name", "score"])
            writer.writerows(rows)
        os.replace(tmp, path)
    return path


def prepare_cache(
    folder: JpegFolder,
    out: Path,
    *,
    resize: str,
    workers: int | None = None,
    splits: int = 2,
    test_fraction: float = 0.2,
    csv_path: Path | None = None,
    name: str = "bench",
) -> Path:
    """`iqa prepare custom` on a generated folder (the library call the CLI makes). Built afresh on every
    run, so a cache written by an older iqa is never measured."""
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.cache_write import CacheOptions
    from iqa_cli.data.datasets.custom import make_spec

    spec = make_spec(name, csv_path or folder.csv, root=folder.root, native_range=(1.0, 5.0))
    out.parent.mkdir(parents=True, exist_ok=True)
    build_cache(
        spec, folder.root, out, CacheOptions(resize=resize, workers=workers, splits=splits, test_fraction=test_fraction)
    )
    return out


# ---------------------------------------------------------------------------------- child processes


def run_child(module: str, name: str, params: dict[str, Any], *, timeout: float = 3600) -> dict[str, Any]:
    """Run measurement `name` of `module` (e.g. 'benchmarks.bench_prepare') in a fresh interpreter.

    Returns the child's result dict plus `peak_tree_mb` (sampled PSS of the child and all its
    workers together) and `wall_seconds` (including interpreter start-up).
    """
    command = [sys.executable, "-m", module, "--child", name, "--params", json.dumps(params)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeMemorySampler(process.pid) as sampler:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
            raise RuntimeError(f"{module} {name} ran past {timeout:.0f} s") from None
    found = [line[len(RESULT_TAG) :] for line in stdout.splitlines() if line.startswith(RESULT_TAG)]
    if process.returncode != 0 or not found:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{module} {name} failed (exit {process.returncode}): {tail}")
    result = json.loads(found[-1])
    result["peak_tree_mb"] = sampler.peak_mb
    result["wall_seconds"] = time.perf_counter() - started
    return result


def child_main(argv: Sequence[str], measurements: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> bool:
    """In a child process (`--child NAME --params JSON`): run one measurement, print its result line,
    and return True; otherwise return False (the script runs as the parent)."""
    if "--child" not in argv:
        return False
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True, choices=sorted(measurements))
    parser.add_argument("--params", default="{}")
    args = parser.parse_args(list(argv))
    with PeakRSS() as peak:
        result = measurements[args.child](json.loads(args.params))
    result.setdefault("peak_rss_mb", peak.mb)
    result.setdefault("peak_rss_scope", peak.scope)
    result.setdefault("peak_workers_rss_mb", peak_children_rss_mb())
    print(RESULT_TAG + json.dumps(result), flush=True)
    return True


# --------------------------------------------------------------------------------------- arguments


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: proves the script works (< 1 min)")
    parser.add_argument("--jsonl", type=Path, default=None, help="also append the JSON lines to this file")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where generated images and caches go (default $IQA_BENCH_DIR or <tmp>/iqa-bench; reused across runs)",
    )
    return parser


def workdir_of(args: argparse.Namespace) -> Path:
    path = Path(args.workdir or default_workdir())
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def scratch_home(workdir: Path) -> Iterator[Path]:
    """IQA_HOME pointed at the workdir while a benchmark runs (never the user's own home)."""
    home = workdir / "iqa_home"
    home.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("IQA_HOME")
    os.environ["IQA_HOME"] = str(home)
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop("IQA_HOME", None)
        else:
            os.environ["IQA_HOME"] = previous


def torch_setup(threads: int | None = None) -> None:
    """Torch's intra-op threads = the cores this process may use (what the CLI gets by default)."""
    import torch

    torch.set_num_threads(threads or cores())


def vtiqa_checkpoint(path: Path, tiny: bool) -> Path:
    """A VT-IQA checkpoint with random weights (seed 0), full size or `--tiny`, as `iqa train` writes one."""
    import torch

    from iqa_cli.models.checkpoint import save_checkpoint
    from iqa_cli.train.config import to_plain
    from iqa_cli.train.recipes import get_recipe
    from iqa_cli.train.trainer import resolve_config

    recipe = get_recipe("vtiqa")
    params = resolve_config(recipe, tiny=tiny, config_file=None, overrides={"pretrained": "none"}).params
    torch.manual_seed(0)
    model = recipe.build_model(params, tiny=tiny, pretrained=False)
    meta = {"method": "vtiqa", "params": to_plain(params), "tiny": tiny, "model": recipe.model_name(params)}
    return save_checkpoint(model, path, meta)


def median_range(values: list[float]) -> dict[str, Any]:
    """{'median', 'range'} of interleaved rounds, rounded for the report."""
    return {"median": round(statistics.median(values), 3), "range": [round(min(values), 3), round(max(values), 3)]}
