"""Low-level image operations with the semantics of the MATLAB functions the KADIS toolbox calls.

Every function here works on float images in [0, 1] (H x W or H x W x C, float64 unless noted) and
is written from the documented behaviour of the MATLAB function it stands in for:
`mapmm` (global min-max to [0, 1]), `imgaussfilt` (kernel size 2*ceil(2*sigma)+1, replicate
padding), `fspecial('disk'|'motion'|'gaussian')`, `imfilter` (correlation, replicate or symmetric
padding), `rgb2lab`/`lab2rgb` (sRGB, D65), `rgb2hsv`/`hsv2rgb`, `rgb2ycbcr`/`ycbcr2rgb` (BT.601
studio range), `rgb2gray`, `curves` (the toolbox's spline tone curve) and `im2uint8`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numpy as np
from scipy import ndimage, signal
from scipy.interpolate import CubicSpline

# ---------------------------------------------------------------------------------------------
# Range handling


def mapmm(x: np.ndarray) -> np.ndarray:
    """Map the global minimum and maximum of `x` to 0 and 1 (the toolbox's `mapmm`).

    A constant array is returned unchanged, as MATLAB's `mapmm` does.
    """
    x = np.asarray(x, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    if lo < hi:
        return (x - lo) / (hi - lo)
    return x.copy()


def to_unit(image: np.ndarray) -> np.ndarray:
    """uint8 image -> float64 in [0, 1] after `mapmm`, the toolbox's first step for types 1-25.

    For a constant image `mapmm` is a no-op in MATLAB and would leave values in 0..255; dividing by
    255 instead keeps the distortions meaningful for that degenerate input.
    """
    x = image.astype(np.float64)
    if x.min() < x.max():
        return mapmm(x)
    return x / 255.0


def im2uint8(x: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8 by rounding half away from zero and saturating (MATLAB `im2uint8`)."""
    y = np.floor(np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0) * 255.0 + 0.5)
    return y.astype(np.uint8)


def round_half_away(x: np.ndarray | float) -> np.ndarray:
    """MATLAB `round`: halves go away from zero (numpy rounds them to even)."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def truncate(x: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    return np.clip(x, lo, hi)


# ---------------------------------------------------------------------------------------------
# Filtering


def _per_channel(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    if x.ndim == 2:
        return fn(x)
    return np.stack([fn(x[..., c]) for c in range(x.shape[-1])], axis=-1)


def gaussian_kernel_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian sampled at offsets -(size-1)/2 .. (size-1)/2 (as `fspecial('gaussian')`)."""
    offsets = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    k = np.exp(-(offsets**2) / (2.0 * sigma * sigma))
    return k / k.sum()


def _origin(size: int) -> int:
    # MATLAB's imfilter puts a kernel's centre at index floor((size+1)/2) (1-based); scipy's default
    # centre is size//2 (0-based). They differ by one for even sizes, which `origin=-1` corrects.
    return -1 if size % 2 == 0 else 0


def separable_filter(x: np.ndarray, kernel: np.ndarray, mode: str = "nearest") -> np.ndarray:
    """Correlate each channel with `kernel` along rows then columns (MATLAB imfilter semantics).

    `mode='nearest'` is MATLAB's 'replicate' padding, `mode='reflect'` its 'symmetric' padding.
    """
    origin = _origin(len(kernel))

    def one(ch: np.ndarray) -> np.ndarray:
        y = ndimage.correlate1d(ch, kernel, axis=0, mode=mode, origin=origin)
        return ndimage.correlate1d(y, kernel, axis=1, mode=mode, origin=origin)

    return _per_channel(one, x)


def filter2d(x: np.ndarray, kernel: np.ndarray, mode: Literal["edge", "symmetric"] = "edge") -> np.ndarray:
    """Correlate every channel with a 2-D kernel: MATLAB `imfilter(x, k)` with 'replicate' padding.

    `mode` is an `np.pad` mode ('edge' = replicate, 'symmetric' = symmetric). The correlation runs
    through an FFT, which is exact to float rounding and much faster than direct sums for the
    17x17 disk and long motion kernels.
    """
    kh, kw = kernel.shape
    ch, cw = (kh + 1) // 2 - 1, (kw + 1) // 2 - 1  # MATLAB's kernel centre, 0-based
    pad = [(ch, kh - 1 - ch), (cw, kw - 1 - cw)] + [(0, 0)] * (x.ndim - 2)
    padded = np.pad(x, pad, mode=mode)
    flipped = kernel[::-1, ::-1]
    if x.ndim == 3:
        flipped = flipped[:, :, None]
    return signal.fftconvolve(padded, flipped, mode="valid", axes=(0, 1))


def imgaussfilt(x: np.ndarray, sigma: float) -> np.ndarray:
    """MATLAB `imgaussfilt(x, sigma)`: kernel size 2*ceil(2*sigma)+1, replicate padding, per channel."""
    size = 2 * math.ceil(2.0 * sigma) + 1
    return separable_filter(x, gaussian_kernel_1d(size, sigma), mode="nearest")


def disk_kernel(radius: float, supersample: int = 32) -> np.ndarray:
    """Pillbox kernel of the given radius: each tap is the area of its pixel inside the circle.

    MATLAB's `fspecial('disk', r)` computes the same covered area analytically; here it is measured
    on a `supersample` x `supersample` grid per pixel, which agrees to about 1e-3 per tap.
    """
    r = int(math.ceil(radius))
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    coords = np.arange(-r, r + 1, dtype=np.float64)
    sub = (coords[:, None] + offsets[None, :]).reshape(-1)  # sub-sample positions along one axis
    inside = (sub[:, None] ** 2 + sub[None, :] ** 2) <= radius * radius
    n = 2 * r + 1
    area = inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))
    return area / area.sum()


def motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """Linear motion kernel: a segment of `length` px at `angle_deg` (counter-clockwise from the x axis).

    Like `fspecial('motion', len, theta)`, every pixel whose centre lies within one pixel of the
    segment gets weight (1 - distance), the weights sum to 1, and length 1 gives the identity.
    """
    if length <= 1:
        return np.ones((1, 1))
    half = (length - 1) / 2.0
    theta = math.radians(angle_deg % 180.0)
    # Image rows grow downwards, so a counter-clockwise angle has a negative row component.
    # Rounded so that 90 degrees is exactly vertical (cos(pi/2) is 6e-17, not 0).
    dx, dy = round(math.cos(theta), 12), round(-math.sin(theta), 12)
    r = int(math.ceil(half)) + 1
    rows, cols = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    along = np.clip(cols * dx + rows * dy, -half, half)
    dist = np.hypot(cols - along * dx, rows - along * dy)
    k = np.maximum(0.0, 1.0 - dist)
    # Drop all-zero border rows/columns; the kernel is point-symmetric, so its centre stays put.
    keep_r = int(min(np.argmax(k.any(axis=1)), np.argmax(k.any(axis=1)[::-1])))
    keep_c = int(min(np.argmax(k.any(axis=0)), np.argmax(k.any(axis=0)[::-1])))
    k = k[keep_r : k.shape[0] - keep_r, keep_c : k.shape[1] - keep_c]
    return k / k.sum()


# ---------------------------------------------------------------------------------------------
# Colour spaces (MATLAB defaults: sRGB, D65 white point)

_RGB2XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_XYZ2RGB = np.linalg.inv(_RGB2XYZ)
_WHITE_D65 = np.array([0.9504559270516716, 1.0, 1.0890577507598784])
_EPS = (6.0 / 29.0) ** 3
_KAPPA = 3.0 * (6.0 / 29.0) ** 2


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((np.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.maximum(c, 0.0031308) ** (1.0 / 2.4) - 0.055)


def rgb2lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> CIE L*a*b* (L in 0..100), D65, as MATLAB `rgb2lab`."""
    xyz = _srgb_to_linear(rgb) @ _RGB2XYZ.T / _WHITE_D65
    f = np.where(xyz > _EPS, np.cbrt(xyz), xyz / _KAPPA + 4.0 / 29.0)
    lab = np.empty_like(f)
    lab[..., 0] = 116.0 * f[..., 1] - 16.0
    lab[..., 1] = 500.0 * (f[..., 0] - f[..., 1])
    lab[..., 2] = 200.0 * (f[..., 1] - f[..., 2])
    return lab


def lab2rgb(lab: np.ndarray) -> np.ndarray:
    """CIE L*a*b* -> sRGB (not clipped; callers truncate as the toolbox does), as MATLAB `lab2rgb`."""
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    xyz = np.where(f > 6.0 / 29.0, f**3, _KAPPA * (f - 4.0 / 29.0)) * _WHITE_D65
    return _linear_to_srgb(xyz @ _XYZ2RGB.T)


def rgb2hsv(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] -> HSV with H, S, V in [0, 1] (MATLAB `rgb2hsv`)."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    delta = v - rgb.min(axis=-1)
    s = np.divide(delta, v, out=np.zeros_like(v), where=v > 0)
    safe = np.where(delta > 0, delta, 1.0)
    h = np.where(
        v == r,
        (g - b) / safe,
        np.where(v == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe),
    )
    h = np.where(delta > 0, (h / 6.0) % 1.0, 0.0)
    return np.stack([h, s, v], axis=-1)


def hsv2rgb(hsv: np.ndarray) -> np.ndarray:
    """HSV -> RGB (MATLAB `hsv2rgb`); saturation outside [0, 1] is used as given, not clipped."""
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    h6 = (h % 1.0) * 6.0
    sector = np.floor(h6).astype(np.int64) % 6
    f = h6 - np.floor(h6)
    p = v * (1.0 - s)
    q = v * (1.0 - s * f)
    t = v * (1.0 - s * (1.0 - f))
    choices_r = [v, q, p, p, t, v]
    choices_g = [t, v, v, q, p, p]
    choices_b = [p, p, t, v, v, q]
    conds = [sector == i for i in range(6)]
    return np.stack([np.select(conds, choices_r), np.select(conds, choices_g), np.select(conds, choices_b)], axis=-1)


_RGB2YCBCR = np.array(
    [
        [65.481, 128.553, 24.966],
        [-37.797, -74.203, 112.0],
        [112.0, -93.786, -18.214],
    ]
)
_YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])


def rgb2ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] -> Y'CbCr in [0, 1] with BT.601 studio ranges (MATLAB `rgb2ycbcr` on doubles)."""
    return (rgb @ _RGB2YCBCR.T + _YCBCR_OFFSET) / 255.0


def ycbcr2rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of `rgb2ycbcr`, clipped to [0, 1] as MATLAB `ycbcr2rgb` does for doubles."""
    return truncate((ycc * 255.0 - _YCBCR_OFFSET) @ np.linalg.inv(_RGB2YCBCR).T)


def rgb2gray(rgb: np.ndarray) -> np.ndarray:
    """Luma with MATLAB `rgb2gray` weights."""
    return rgb @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


# ---------------------------------------------------------------------------------------------
# Tone curves and statistics


def curves(x: np.ndarray, coef: float | tuple[float, float]) -> np.ndarray:
    """The toolbox's `curves`: a not-a-knot cubic spline through fixed control points, clipped to [0, 1].

    A scalar `c` passes through (0, 0), (0.5, c), (1, 1) (with three points the not-a-knot spline is
    the parabola through them); a pair (c1, c2) through (0, 0), (0.3, c1), (0.5, 0.5), (0.7, c2), (1, 1).
    """
    if isinstance(coef, (int, float, np.floating)):
        xs, ys = [0.0, 0.5, 1.0], [0.0, float(coef), 1.0]
    else:
        c1, c2 = coef
        xs, ys = [0.0, 0.3, 0.5, 0.7, 1.0], [0.0, float(c1), 0.5, float(c2), 1.0]
    spline = CubicSpline(xs, ys, bc_type="not-a-knot")
    return np.clip(spline(x), 0.0, 1.0)


def percentile1(x: np.ndarray, perc: float) -> float:
    """The toolbox's `percentile1`: the sorted value at index round(n*perc/100), clamped to 1..n (1-based)."""
    xs = np.sort(x, axis=None)
    n = xs.size
    i = min(max(n * perc / 100.0, 1.0), float(n))
    return float(xs[int(round_half_away(i)) - 1])


def ps2(x: np.ndarray, percdev: float = 1.0) -> np.ndarray:
    """The toolbox's `ps2`: min-max, clip to the [percdev, 100-percdev] percentiles, min-max again."""
    a = mapmm(x)
    hi = percentile1(a, 100.0 - percdev)
    lo = 1.0 - percentile1(1.0 - a, 100.0 - percdev)
    return mapmm(np.maximum(np.minimum(a, hi), lo))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB between two arrays (inf for identical inputs), as MATLAB `psnr` for uint8 images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)
