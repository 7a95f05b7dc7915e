"""Colour types: 4 colour diffusion, 5 colour shift, 6 colour quantization, 7 and 8 colour saturation."""

from __future__ import annotations

import numpy as np
from PIL import Image

from iqa_cli.distort.base import kadis_type
from iqa_cli.distort.ops import (
    hsv2rgb,
    im2uint8,
    imgaussfilt,
    lab2rgb,
    mapmm,
    ps2,
    rgb2gray,
    rgb2hsv,
    rgb2lab,
    round_half_away,
    truncate,
)


@kadis_type(levels=(1, 3, 6, 8, 12))
def color_diffusion(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """`imcolordiffuse` -> `imcolorblur(I, 1.5*amount + 2, amount)`.

    The a*, b* channels are Gaussian-blurred with sigma 1.5*amount + 2 and then multiplied by
    `amount` (so the stronger levels both bleed and over-saturate colours, as in KADID-10k).
    """
    lab = rgb2lab(x)
    lab[..., 1:] = imgaussfilt(lab[..., 1:], 1.5 * amount + 2.0) * amount
    return truncate(lab2rgb(lab))


def _shift_replicate(channel: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Move content down by dy and right by dx (both >= 0), filling with the edge values (`imshift`)."""
    h, w = channel.shape
    rows = np.clip(np.arange(h) - dy, 0, h - 1)
    cols = np.clip(np.arange(w) - dx, 0, w - 1)
    return channel[rows[:, None], cols[None, :]]


@kadis_type(levels=(1, 3, 6, 8, 12))
def color_shift(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """`imcolorshift`: the green channel is shifted by `amount` px and blended in where edges are.

    The direction is a random unit vector in the positive quadrant (normr(rand(1,2))), the shift is
    rounded to whole pixels, and the blend weight is the smoothed, percentile-clipped gradient
    magnitude of the grey image, so the misregistration shows along edges only.
    """
    gy, gx = np.gradient(rgb2gray(x))
    edges = mapmm(imgaussfilt(np.hypot(gx, gy), 4.0))
    weight = ps2(truncate(edges, 0.1, 1.0))
    direction = rng.random(2)
    norm = float(np.hypot(direction[0], direction[1]))
    direction = direction / norm if norm > 0 else direction
    dy, dx = (int(v) for v in round_half_away(direction * amount))
    out = x.copy()
    shifted = _shift_replicate(x[..., 1], dy, dx)
    out[..., 1] = shifted * weight + x[..., 1] * (1.0 - weight)
    return out


@kadis_type(levels=(64, 48, 32, 16, 8))
def color_quantization(x: np.ndarray, colors: int, rng: np.random.Generator) -> np.ndarray:
    """`imcolorquantize` (MATLAB `rgb2ind(I, n)` + `ind2rgb`): an n-colour palette with dithering.

    MATLAB builds a minimum-variance palette and maps with Floyd-Steinberg dithering (its default).
    Here Pillow's median-cut palette stands in for minimum variance, followed by the same
    Floyd-Steinberg error diffusion onto that palette.
    """
    pixels = im2uint8(x)
    image = Image.fromarray(pixels)
    # The palette is built from every other pixel in each direction (4x faster, same palette to within
    # a level or two); the dithering below maps every pixel.
    sample = Image.fromarray(np.ascontiguousarray(pixels[::2, ::2]))
    palette = sample.quantize(colors=int(colors), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    dithered = image.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG)
    return np.asarray(dithered.convert("RGB"), dtype=np.float64) / 255.0


@kadis_type(levels=(0.4, 0.2, 0.1, 0.0, -0.4))
def color_saturation_hsv(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """`imcolorsaturate`: HSV saturation times `factor` (all levels desaturate; -0.4 also flips hue)."""
    hsv = rgb2hsv(x)
    hsv[..., 1] *= factor
    return hsv2rgb(hsv)


@kadis_type(levels=(1, 2, 3, 6, 9))
def color_saturation_lab(x: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    """`imsaturate`: a*, b* times `factor` (over-saturation), clipped back into the RGB cube."""
    lab = rgb2lab(x)
    lab[..., 1:] *= factor
    return truncate(lab2rgb(lab))
