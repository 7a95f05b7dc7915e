"""Spatial types: 19 jitter, 20 non-eccentricity patch, 21 pixelate, 22 quantization, 23 colour block (KADID-10k)."""

from __future__ import annotations

import math

import numpy as np

from iqa_cli.distort.base import kadis_type
from iqa_cli.distort.ops import im2uint8, round_half_away

# ---------------------------------------------------------------------------------------------
# 19 jitter


def _keys_weights(t: np.ndarray) -> list[np.ndarray]:
    """Cubic-convolution (Keys, a = -0.5) weights of the taps at offsets -1, 0, 1, 2 for fraction t."""
    a = -0.5

    def near(s: np.ndarray) -> np.ndarray:  # |s| <= 1
        return (a + 2.0) * s**3 - (a + 3.0) * s**2 + 1.0

    def far(s: np.ndarray) -> np.ndarray:  # 1 < |s| < 2
        return a * s**3 - 5.0 * a * s**2 + 8.0 * a * s - 4.0 * a

    return [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]


def warp_cubic(image: np.ndarray, shift_y: np.ndarray, shift_x: np.ndarray) -> np.ndarray:
    """Sample `image` at (y - shift_y, x - shift_x) with bicubic interpolation and replicate borders.

    This is the toolbox's `imwarpmap(im, shifts, 'bicubic', true)` (MATLAB `interp2` 'cubic' is
    cubic convolution on a uniform grid; the replicate padding keeps border samples defined).
    Computed in float32 with one flat gather per tap and channel, the fastest form in numpy.
    """
    h, w, c = image.shape
    yy = np.arange(h, dtype=np.float32)[:, None] - shift_y.astype(np.float32)
    xx = np.arange(w, dtype=np.float32)[None, :] - shift_x.astype(np.float32)
    y0 = np.floor(yy)
    x0 = np.floor(xx)
    wy = _keys_weights(yy - y0)
    wx = _keys_weights(xx - x0)
    y0 = y0.astype(np.intp)
    x0 = x0.astype(np.intp)
    planes = [np.ascontiguousarray(image[..., ch], dtype=np.float32).ravel() for ch in range(c)]
    rows = [np.clip(y0 + i - 1, 0, h - 1) * w for i in range(4)]
    cols = [np.clip(x0 + j - 1, 0, w - 1) for j in range(4)]
    out = [np.zeros((h, w), dtype=np.float32) for _ in range(c)]
    for i in range(4):
        for j in range(4):
            index = (rows[i] + cols[j]).ravel()
            weight = wy[i] * wx[j]
            for ch in range(c):
                out[ch] += planes[ch].take(index).reshape(h, w) * weight
    return np.stack(out, axis=-1).astype(np.float64)


@kadis_type(levels=(0.05, 0.1, 0.2, 0.5, 1.0))
def jitter(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """`imjitter` -> `imscatter(I, [], amount, 5)`: five rounds of warping every pixel by an independent
    N(0, amount^2) displacement in x and y (bicubic).

    Cubic interpolation overshoots at edges (values a little below 0 and above 1), and the toolbox's
    final min-max normalisation maps that wider range back to [0, 1], so jittered images also lose a
    little contrast; this is the toolbox's behaviour and is kept.
    """
    h, w = x.shape[:2]
    out = x
    for _ in range(5):
        shifts = rng.standard_normal((h, w, 2)) * amount
        out = warp_cubic(out, shifts[..., 0], shifts[..., 1])
    return out


# ---------------------------------------------------------------------------------------------
# 20 non-eccentricity patch


@kadis_type(levels=(20, 40, 60, 80, 100))
def non_eccentricity_patch(x: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`imnoneccentricity`: `count` times, copy a random 16x16 patch to a position moved by up to
    +-8 px in x and y (the copies compound, as in the toolbox, which reads from the edited image)."""
    size, radius = 16, 16
    h, w = x.shape[:2]
    out = x.copy()
    # 1-based bounds of the patch's top-left corner, as in the MATLAB code.
    h_min, w_min = radius, radius
    h_max, w_max = max(h - size - radius, h_min), max(w - size - radius, w_min)
    for _ in range(int(count)):
        w_start = int(round_half_away(rng.random() * (w_max - w_min))) + w_min
        h_start = int(round_half_away(rng.random() * (h_max - h_min))) + h_min
        patch = out[h_start - 1 : h_start - 1 + size, w_start - 1 : w_start - 1 + size].copy()
        new_w = int(round_half_away((rng.random() - 0.5) * radius + w_start))
        new_h = int(round_half_away((rng.random() - 0.5) * radius + h_start))
        new_w = min(max(new_w, 1), w - size + 1)
        new_h = min(max(new_h, 1), h - size + 1)
        out[new_h - 1 : new_h - 1 + size, new_w - 1 : new_w - 1 + size] = patch
    return out


# ---------------------------------------------------------------------------------------------
# 21 pixelate


def _nearest_indices(out_size: int, in_size: int, scale: float) -> np.ndarray:
    """MATLAB `imresize(..., 'nearest')` source indices (0-based) for a given scale."""
    return np.clip(np.floor((np.arange(out_size) + 0.5) / scale).astype(np.int64), 0, in_size - 1)


@kadis_type(levels=(0.01, 0.05, 0.1, 0.2, 0.5))
def pixelate(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """`impixelate`: nearest-neighbour downscale by z = 0.95 - strength^0.6, then nearest upscale back."""
    z = 0.95 - strength**0.6
    h, w = x.shape[:2]
    lo_h, lo_w = math.ceil(z * h), math.ceil(z * w)
    small = x[_nearest_indices(lo_h, h, z)][:, _nearest_indices(lo_w, w, z)]
    rows = _nearest_indices(h, lo_h, h / lo_h)
    cols = _nearest_indices(w, lo_w, w / lo_w)
    return small[rows][:, cols]


# ---------------------------------------------------------------------------------------------
# 22 quantization


def multilevel_otsu(values: np.ndarray, n_thresholds: int, max_iter: int = 200) -> np.ndarray:
    """`n_thresholds` thresholds in [0, 1] that (locally) maximise Otsu's between-class variance.

    MATLAB's `multithresh` works on a 256-bin histogram; an exhaustive search is infeasible for
    up to 20 thresholds, so this runs Lloyd's iterations on the histogram (each threshold moves to
    the midpoint of the neighbouring class means), which converge to a maximum of the same
    criterion, starting from equal-population classes. Returns thresholds as grey level / 255.
    """
    levels = np.arange(256, dtype=np.float64)
    hist = np.bincount(im2uint8(values).reshape(-1), minlength=256).astype(np.float64)
    cdf = np.cumsum(hist) / hist.sum()
    # Class k holds grey levels (t[k-1], t[k]]; start from quantiles.
    t = np.searchsorted(cdf, np.arange(1, n_thresholds + 1) / (n_thresholds + 1)).astype(np.float64)
    t = np.clip(t, 0, 254)
    for _ in range(max_iter):
        bounds = np.concatenate([[-1.0], t, [255.0]])
        means = []
        for k in range(n_thresholds + 1):
            sel = (levels > bounds[k]) & (levels <= bounds[k + 1])
            mass = hist[sel].sum()
            means.append((hist[sel] * levels[sel]).sum() / mass if mass > 0 else (bounds[k] + bounds[k + 1]) / 2)
        means_arr = np.array(means)
        new_t = np.floor((means_arr[:-1] + means_arr[1:]) / 2.0)
        new_t = np.maximum.accumulate(np.clip(new_t, 0, 254))
        if np.array_equal(new_t, t):
            break
        t = new_t
    return t / 255.0


@kadis_type(levels=(20, 16, 13, 10, 7))
def quantization(x: np.ndarray, n_thresholds: int, rng: np.random.Generator) -> np.ndarray:
    """`imnoisequantize`: Otsu thresholds of the whole RGB image, then `imquantize` with the values
    [0, t2, ..., tN, 1]: below t1 -> 0, (t(k-1), t(k)] -> t(k), above tN -> 1 (per sample)."""
    t = multilevel_otsu(x, int(n_thresholds))
    values = np.concatenate([[0.0], t[1:], [1.0]])
    return values[np.searchsorted(t, x, side="left")]


# ---------------------------------------------------------------------------------------------
# 23 colour block


@kadis_type(levels=(2, 4, 6, 8, 10))
def color_block(x: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`imcolorblock`: `count` opaque 32x32 squares of uniformly random colour at random positions.

    MATLAB draws each square at a fractional corner in [0, size-32) and clips it to the image; the
    corner is floored here so every square is a full 32x32 patch inside the image.
    """
    size = 32
    h, w = x.shape[:2]
    out = x.copy()
    for _ in range(int(count)):
        color = rng.random(3)
        left = int(math.floor(rng.random() * max(w - size, 0)))
        top = int(math.floor(rng.random() * max(h - size, 0)))
        out[top : top + size, left : left + size] = color
    return out
