"""Small generated image folders for the cache tests: mixed formats and sizes, a score CSV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


def smooth_image(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth colourful uint8 image (gradients plus low-frequency waves), so JPEG and resizing
    errors stay small and comparisons can use tight tolerances."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = []
    for _ in range(3):
        fx, fy, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.28)
        wave = np.sin(2 * np.pi * (fx * x / width + fy * y / height) + phase)
        ramp = x / max(width - 1, 1) * rng.uniform(-1, 1) + y / max(height - 1, 1) * rng.uniform(-1, 1)
        channels.append(128 + 80 * wave + 40 * ramp)
    return np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)


def save(path: Path, array: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


@dataclass
class Item:
    name: str  # relative path in the folder
    width: int
    height: int
    score: float
    std: float | None


# A mixed folder: JPEG/PNG/BMP, landscape and portrait, one upper-case extension, one sub-folder.
MIXED = [
    Item("a.jpg", 48, 36, 10.0, 1.5),
    Item("b.png", 36, 48, 20.0, None),
    Item("sub/c.bmp", 40, 30, 35.5, 2.0),
    Item("D.PNG", 30, 30, 50.0, 0.5),
    Item("e.jpeg", 64, 40, 70.25, None),
    Item("sub/f.png", 24, 32, 90.0, 3.0),
]


def make_folder(root: Path, items: list[Item] = MIXED, *, header: bool = True, csv_name: str = "scores.csv") -> Path:
    """Write the images (JPEG quality 95) and a CSV of name,score[,std]; returns the CSV path."""
    lines = ["name,score,std"] if header else []
    for index, item in enumerate(items):
        save(root / item.name, smooth_image(item.width, item.height, seed=index), quality=95)
        std = "" if item.std is None else f"{item.std}"
        lines.append(f"{item.name},{item.score},{std}")
    csv_path = root / csv_name
    csv_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return csv_path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to a fraction of its bytes (a download that stopped halfway)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
