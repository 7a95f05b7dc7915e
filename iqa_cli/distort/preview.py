"""A contact sheet of one reference under every selected distortion type (rows) and level (columns)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from iqa_cli.atomic import PNG, PNG_SOFTWARE, atomic_path, check_output_file
from iqa_cli.distort.base import NotApplicable
from iqa_cli.distort.registry import get_type
from iqa_cli.distort.seeding import pair_rng
from iqa_cli.errors import ConfigError

LABEL_WIDTH = 220
HEADER_HEIGHT = 28
GAP = 4
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)
MISSING = (200, 200, 200)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def preview_layout(n_types: int, n_levels: int, cell: tuple[int, int]) -> tuple[int, int]:
    """Size (width, height) of the sheet: a label column, the reference, then one column per level."""
    cw, ch = cell
    width = LABEL_WIDTH + (n_levels + 1) * (cw + GAP) + GAP
    height = HEADER_HEIGHT + n_types * (ch + GAP) + GAP
    return width, height


def render_preview(
    reference: np.ndarray,
    types: Sequence[int],
    levels: Sequence[int],
    *,
    seed: int = 0,
    ref_id: int = 0,
    cell_width: int = 192,
) -> Image.Image:
    """Distort `reference` (uint8 HxWx3) with every type x level and lay the results out in a grid.

    The random streams are the generator's (`pair_rng(seed, ref_id, type)`), so the sheet shows
    exactly what `generate_distorted` writes for that reference.
    """
    h, w = reference.shape[:2]
    cell = (cell_width, max(1, round(cell_width * h / w)))
    sheet = Image.new("RGB", preview_layout(len(types), len(levels), cell), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = _font(14)

    def place(image: Image.Image | None, row: int, col: int, note: str = "") -> None:
        x = LABEL_WIDTH + GAP + col * (cell[0] + GAP)
        y = HEADER_HEIGHT + GAP + row * (cell[1] + GAP)
        if image is None:
            draw.rectangle([x, y, x + cell[0] - 1, y + cell[1] - 1], fill=MISSING)
            draw.text((x + 8, y + 8), note, fill=TEXT, font=font)
        else:
            sheet.paste(image.resize(cell, Image.Resampling.LANCZOS), (x, y))

    for col, title in enumerate(["reference"] + [f"level {lv}" for lv in levels]):
        draw.text((LABEL_WIDTH + GAP + col * (cell[0] + GAP) + 4, 6), title, fill=TEXT, font=font)
    ref_image = Image.fromarray(reference)
    for row, type_id in enumerate(types):
        dtype = get_type(type_id)
        label_y = HEADER_HEIGHT + GAP + row * (cell[1] + GAP) + 4
        draw.text((6, label_y), f"{dtype.id:2d} {dtype.name}", fill=TEXT, font=font)
        draw.text((6, label_y + 18), ", ".join(str(p) for p in dtype.levels), fill=TEXT, font=_font(11))
        place(ref_image, row, 0)
        for col, level in enumerate(levels, start=1):
            try:
                out = dtype.fn(reference, level, pair_rng(seed, ref_id, type_id, level))
            except NotApplicable:
                place(None, row, col, "n/a for this image")
                continue
            place(Image.fromarray(out), row, col)
    return sheet


def write_preview(
    path: str | Path, reference: np.ndarray, types: Sequence[int], levels: Sequence[int], **kw: Any
) -> Path:
    """Render the sheet and save it as PNG, atomically (never over a file that is no PNG: a reference photo)."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--preview: {path.name} must end in .png")
    check_output_file(path, "--preview", kind=PNG)
    sheet = render_preview(reference, types, levels, **kw)
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", PNG_SOFTWARE)  # marks the sheet as ours, so a later --preview may replace it
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG", pnginfo=info)
    return path
