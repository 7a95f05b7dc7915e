"""Brightness and contrast types: 16 brighten, 17 darken, 18 mean shift, 25 contrast change (KADID-10k),
28 over-exposure and 29 under-exposure (VIPNet, after Ou et al., TMM 2021)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from iqa_cli.distort.base import kadis_type, uint8_type
from iqa_cli.distort.ops import curves, im2uint8, lab2rgb, rgb2lab, truncate


@kadis_type(levels=(0.1, 0.2, 0.4, 0.7, 1.1))
def brighten(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """`imbrighten`: tone curve through (0.5, 0.5 + amount/2), applied to RGB and to L*, blended 2:1."""
    coef = 0.5 + amount / 2.0
    lab = rgb2lab(x)
    lab[..., 0] = curves(lab[..., 0] / 100.0, coef) * 100.0
    return (2.0 * curves(x, coef) + truncate(lab2rgb(lab))) / 3.0


@kadis_type(levels=(0.05, 0.1, 0.2, 0.4, 0.8))
def darken(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """`imdarken`: tone curve through (0.5, 0.5 - amount/2) on RGB (the toolbox's L* path is off by default)."""
    return curves(x, 0.5 - amount / 2.0)


@kadis_type(levels=(0.15, 0.08, 0.0, -0.08, -0.15))
def mean_shift(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """`immeanshift`: add `amount` and clip to [0, 1].

    The driver's final min-max normalisation then stretches the unclipped range back to [0, 1], so
    the visible effect is clipped highlights (positive shifts) or crushed shadows (negative ones);
    level 3 (amount 0) leaves the image unchanged, exactly as in the toolbox.
    """
    return truncate(x + amount)


@kadis_type(levels=(0.3, 0.15, 0.0, -0.4, -0.6))
def contrast_change(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """`imcontrastc`: spline tone curve through (0.3, 0.25 - amount/4) and (0.7, 0.75 + amount/4).

    Positive amounts steepen the mid-tones (more contrast), negative ones flatten them.
    """
    return curves(x, (0.25 - amount / 4.0, 0.75 + amount / 4.0))


def _scale_value(image: np.ndarray, new_value: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Replace HSV value V by new_value(V) keeping hue and saturation, then `im2uint8(hsv2rgb(...))`.

    hsv2rgb is linear in V for a fixed (H, S), so this is RGB * V'/V; black pixels (V = 0) stay black.
    """
    rgb = image.astype(np.float64) / 255.0
    v = rgb.max(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        v_new = new_value(v)
        ratio = np.where(v > 0, v_new / np.where(v > 0, v, 1.0), 0.0)
    return im2uint8(rgb * ratio[..., None])


@uint8_type(levels=(2, 6, 9, 12, 17))
def over_exposure(image: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Type 28, `simulate_ou(img, 1, L)`: V <- V + 0.006*V^3*L^2 + 0.0315*V^2.42*L (V in [0, 1])."""
    return _scale_value(image, lambda v: v + 0.006 * v**3 * level**2 + 0.0315 * v**2.42 * level)


@uint8_type(levels=(2, 6, 9, 12, 17))
def under_exposure(image: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Type 29, `simulate_ou(img, 2, L)`: V <- V - (-0.0018*ln V - 5e-5)*L^2 - 2.1e-5*V^-3*L."""
    return _scale_value(image, lambda v: v - (-0.0018 * np.log(v) - 0.00005) * level**2 - 0.000021 * v**-3.0 * level)
