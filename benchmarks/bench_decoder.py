"""A faster JPEG decoder? `iqa prepare`'s decode (Pillow with libjpeg-turbo's DCT-scaled `draft`, then a
bicubic resize) against simplejpeg (libjpeg-turbo's scaled decode without Pillow's layers, same resize),
side by side, 3 interleaved rounds; pixel difference of the results. Needs `pip install simplejpeg`
(not a dependency: measured equal, see the README).

    python benchmarks/bench_decoder.py
"""

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common as C
from iqa_cli.data.decode import decode_image
from iqa_cli.data.resize import DRAFT_GAP


def pil_path(p, size):
    return decode_image(p, size)


def sj_path(p, size):
    w, h = size
    data = Path(p).read_bytes()
    arr = simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=int(w * DRAFT_GAP), min_height=int(h * DRAFT_GAP))
    im = Image.fromarray(arr)
    if im.size != (w, h):
        im = im.resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(im)


def main() -> None:
    for label, size_in, size_out, n in (
        ("SPAQ-like 4000x3000 -> 683x512", (4000, 3000), (683, 512), 24),
        ("KonIQ-like 1024x768 -> 512x384", (1024, 768), (512, 384), 96),
    ):
        folder = C.jpeg_folder(n, size_in, distinct=8, workdir=C.default_workdir()).root
        files = sorted(folder.glob("*.jpg"))
        times = {"pil": [], "simplejpeg": []}
        for _ in range(3):
            for name, f in (("pil", pil_path), ("simplejpeg", sj_path)):
                t = time.perf_counter()
                for p in files:
                    f(p, size_out)
                times[name].append(time.perf_counter() - t)
        ratio = [a / b for a, b in zip(times["pil"], times["simplejpeg"], strict=True)]
        a = pil_path(files[0], size_out).astype(int)
        b = sj_path(files[0], size_out).astype(int)
        print(
            label,
            {k: round(statistics.median(v), 3) for k, v in times.items()},
            "speedup median",
            round(statistics.median(ratio), 3),
            "range",
            round(min(ratio), 3),
            round(max(ratio), 3),
            "max pixel diff",
            np.abs(a - b).max(),
            "mean",
            round(np.abs(a - b).mean(), 3),
        )


if __name__ == "__main__":
    main()
