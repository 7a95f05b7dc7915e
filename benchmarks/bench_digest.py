"""What recording each file's digest costs `iqa prepare`: one worker's decode + resize of KonIQ- and
SPAQ-like JPEGs without (`decode_job`) and with (`decode_job_with_digest`: the file's SHA-256, read in
1 MiB chunks, then the pixels decoded from the path as before), interleaved A B, B A, ..., 9 pairs;
the ratio is the time with digests over the time without (1.00 = free).

    python benchmarks/bench_digest.py
"""

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common as C
from iqa_cli.data.decode import DecodeJob, decode_job, decode_job_with_digest

PAIRS = 9


def _seconds(decode, jobs) -> float:
    started = time.perf_counter()
    for job in jobs:
        decode(job)
    return time.perf_counter() - started


def main() -> None:
    print(C.machine())
    for label, size_in, size_out, n in (
        ("SPAQ-like 4000x3000 -> 683x512", (4000, 3000), (683, 512), 16),
        ("KonIQ-like 1024x768 -> 512x384", (1024, 768), (512, 384), 96),
    ):
        folder = C.jpeg_folder(n, size_in, distinct=n, workdir=C.default_workdir()).root
        jobs = [DecodeJob(str(p), size=size_out) for p in sorted(folder.glob("*.jpg"))]
        _seconds(decode_job, jobs)  # warm the page cache and the decoder
        ratios, plain, digested = [], [], []
        for pair in range(PAIRS):  # A B, then B A: neither side always runs second
            if pair % 2:
                digested.append(_seconds(decode_job_with_digest, jobs))
                plain.append(_seconds(decode_job, jobs))
            else:
                plain.append(_seconds(decode_job, jobs))
                digested.append(_seconds(decode_job_with_digest, jobs))
            ratios.append(digested[-1] / plain[-1])
        print(
            f"{label}: {len(jobs)} files, without {statistics.median(plain) / len(jobs) * 1e3:.2f} ms/image, "
            f"with digests {statistics.median(digested) / len(jobs) * 1e3:.2f} ms/image; ratio median "
            f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}, {PAIRS} interleaved pairs)"
        )


if __name__ == "__main__":
    main()
