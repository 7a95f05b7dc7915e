"""Small real caches for CLI tests: PNG files + a `name,score` CSV, packed by the cache builder.

The images carry their score as noise strength (as `fakes.MemoryDataset`), come in two sizes (so the
cache pads them), and the cache holds `splits` seeded random 75/25 splits.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from tests.train.fakes import MemoryDataset


def write_folder(root: Path, n: int = 32, seed: int = 0) -> Path:
    data = MemoryDataset(n, seed=seed)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "scores.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "score"])
        for i in range(n):
            h, w = data.sizes[i]
            Image.fromarray(data.images[i, :h, :w]).save(root / data.names[i])
            writer.writerow([data.names[i], f"{data.scores[i]:.4f}"])
    return root


def make_cache(
    name: str,
    folder: Path,
    out: Path,
    *,
    n: int = 32,
    seed: int = 0,
    splits: int = 2,
    lower_better: bool = False,
    resize: str | None = None,
) -> Path:
    from iqa_cli.data.cache import build_cache
    from iqa_cli.data.cache_write import CacheOptions
    from iqa_cli.data.datasets.custom import make_spec

    write_folder(folder, n, seed)
    spec = make_spec(name, folder / "scores.csv", root=folder, native_range=(1.0, 5.0), lower_better=lower_better)
    build_cache(spec, folder, out, CacheOptions(workers=1, splits=splits, test_fraction=0.25, resize=resize))
    return out


def images_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and bool((a == b).all())
