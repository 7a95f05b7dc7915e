"""Blur and sharpness types: 1 Gaussian blur, 2 lens blur, 3 motion blur, 24 high sharpen (KADID-10k)."""

from __future__ import annotations

import math

import numpy as np

from iqa_cli.distort.base import kadis_type
from iqa_cli.distort.ops import (
    disk_kernel,
    filter2d,
    gaussian_kernel_1d,
    imgaussfilt,
    lab2rgb,
    motion_kernel,
    rgb2lab,
    separable_filter,
    truncate,
)


@kadis_type(levels=(0.1, 0.5, 1, 2, 5))
def gaussian_blur(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """`imblurgauss`: Gaussian filter of standard deviation `sigma` px (imgaussfilt)."""
    return imgaussfilt(x, sigma)


@kadis_type(levels=(1, 2, 4, 6, 8))
def lens_blur(x: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """`imblurlens`: pillbox (disk) filter of the given radius, replicate padding."""
    return filter2d(x, disk_kernel(radius))


@kadis_type(levels=(1, 2, 4, 6, 10))
def motion_blur(x: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    """`imblurmotion`: linear motion kernel of `length` px at a random integer angle in [0, 180] degrees."""
    angle = int(rng.integers(0, 181))
    return filter2d(x, motion_kernel(length, angle))


@kadis_type(levels=(1, 2, 3, 6, 12))
def high_sharpen(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """`imsharpenHi`: unsharp masking of the L* channel (MATLAB `imsharpen`, radius 3), then clipped.

    `imsharpen` sharpens only lightness for RGB input: L' = L + amount * (L - G_3 * L), with a
    Gaussian of sigma 3 on a 2*ceil(2*3)+1 = 13-tap support and replicate padding.
    """
    radius = 3.0
    lab = rgb2lab(x)
    lightness = lab[..., 0]
    blurred = separable_filter(lightness, gaussian_kernel_1d(2 * math.ceil(2 * radius) + 1, radius))
    lab[..., 0] = lightness + amount * (lightness - blurred)
    return truncate(lab2rgb(lab))
