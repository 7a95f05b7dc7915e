"""Small natural-looking test images for the distortion tests (no files, fully deterministic)."""

from __future__ import annotations

import numpy as np

HEIGHT, WIDTH = 96, 128


def synthetic_scene(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A smooth colour gradient with a few sharp-edged shapes and mild texture, spanning 0..255.

    Smooth regions (so blur and noise measures are clean), hard edges (so blur, shifts and sharpening
    show), saturated and grey areas (for the colour types), and the full range (so the toolbox's
    min-max normalisation is the identity on the input).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = xx / (width - 1), yy / (height - 1)
    image = np.stack([0.25 + 0.5 * u, 0.3 + 0.4 * v, 0.65 - 0.35 * u * v], axis=-1)
    image += 0.04 * np.sin(xx / 3.0)[..., None] * np.cos(yy / 4.0)[..., None]  # fine texture
    disk = (xx - 0.3 * width) ** 2 + (yy - 0.45 * height) ** 2 < (0.18 * height) ** 2
    image[disk] = [0.85, 0.2, 0.15]
    square = (np.abs(xx - 0.72 * width) < 0.12 * width) & (np.abs(yy - 0.6 * height) < 0.2 * height)
    image[square] = [0.15, 0.35, 0.8]
    image[(np.abs(xx - 0.5 * width) < 1.5)] = 0.0  # a thin black line
    image[: height // 8, : width // 8] = 1.0  # a white corner
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def natural_photo(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray | None:
    """scikit-image's 'coffee' photograph at the test size, or None when scikit-image is absent."""
    try:
        from skimage import data
    except ImportError:
        return None
    from PIL import Image

    return np.asarray(Image.fromarray(data.coffee()).resize((width, height), Image.Resampling.BICUBIC))


def write_reference_folder(folder, count: int = 4, size: tuple[int, int] = (80, 64)):
    """`count` small pristine references (PNG, one JPEG, one in a subfolder) under `folder`; returns it.

    Each is a different crop/flip of the synthetic scene; one has another size so the resize runs.
    """
    from pathlib import Path

    from PIL import Image

    folder = Path(folder)
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    width, height = size
    base = synthetic_scene(height * 2, width * 2)
    for k in range(count):
        crop = base[(k * 7) % height : (k * 7) % height + height, (k * 11) % width : (k * 11) % width + width]
        crop = crop[:, ::-1] if k % 2 else crop
        image = Image.fromarray(np.ascontiguousarray(crop))
        if k == 1:
            image.resize((width + 20, height + 15), Image.Resampling.BICUBIC).save(folder / f"ref{k}.jpg", quality=95)
        elif k == 2:
            image.save(folder / "sub" / f"ref{k}.png")
        else:
            image.save(folder / f"ref{k}.png")
    return folder
