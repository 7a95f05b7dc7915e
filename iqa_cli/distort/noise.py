"""Noise types: 11 white noise, 12 white noise in colour components, 13 impulse noise,
14 multiplicative noise, 15 denoise (KADID-10k) and 26 pink noise (VIPNet)."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from iqa_cli.distort.base import kadis_type, uint8_type
from iqa_cli.distort.ops import rgb2ycbcr, truncate, ycbcr2rgb


def imnoise_gaussian(x: np.ndarray, var: float, rng: np.random.Generator) -> np.ndarray:
    """MATLAB `imnoise(x, 'gaussian', 0, var)` on doubles: additive N(0, var) per element, clipped to [0, 1]."""
    return truncate(x + rng.standard_normal(x.shape) * math.sqrt(var))


@kadis_type(levels=(0.001, 0.002, 0.003, 0.005, 0.01))
def white_noise(x: np.ndarray, var: float, rng: np.random.Generator) -> np.ndarray:
    """`imnoisegauss`: additive white Gaussian noise of variance `var` (image in [0, 1])."""
    return imnoise_gaussian(x, var, rng)


@kadis_type(levels=(0.0001, 0.0005, 0.001, 0.002, 0.003))
def white_noise_color(x: np.ndarray, var: float, rng: np.random.Generator) -> np.ndarray:
    """`imnoisecolorcomp`: Gaussian noise of variance `var` added in Y'CbCr (all three planes), back to RGB."""
    return ycbcr2rgb(imnoise_gaussian(rgb2ycbcr(x), var, rng))


@kadis_type(levels=(0.001, 0.005, 0.01, 0.02, 0.03))
def impulse_noise(x: np.ndarray, density: float, rng: np.random.Generator) -> np.ndarray:
    """`imnoiseimpulse` (salt & pepper): each sample independently becomes 0 with probability d/2 and 1 with d/2."""
    u = rng.random(x.shape)
    out = x.copy()
    out[u < density / 2.0] = 0.0
    out[(u >= density / 2.0) & (u < density)] = 1.0
    return out


@kadis_type(levels=(0.001, 0.005, 0.01, 0.02, 0.05))
def multiplicative_noise(x: np.ndarray, var: float, rng: np.random.Generator) -> np.ndarray:
    """`imnoisemultiplicative` (speckle): x + n*x with n uniform, zero mean, variance `var`; clipped."""
    n = (rng.random(x.shape) - 0.5) * math.sqrt(12.0 * var)
    return truncate(x + n * x)


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: row k is the k-th basis vector."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    d[0] /= math.sqrt(2.0)
    return d


def _along_axis3(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply matrix `m` along axis 3 of a (y, u, x, v, c) array (matmul is fast where einsum is not)."""
    return np.matmul(x.transpose(0, 1, 2, 4, 3), m.T).transpose(0, 1, 2, 4, 3)


def dct_denoise(channels: np.ndarray, sigma: float, block: int = 8, step: int = 2) -> np.ndarray:
    """Sliding-window DCT hard thresholding (Yu & Sapiro's DCT denoising), per channel.

    Every `block` x `block` window on a grid of stride `step` is transformed with the orthonormal
    2-D DCT, coefficients below 3*sigma (DC kept) are zeroed, and the overlapping inverse
    transforms are averaged. `channels` is H x W x C in [0, 1]; `sigma` is the noise std.
    """
    h, w, c = channels.shape
    d = _dct_matrix(block).astype(np.float32)
    pad = block
    padded = np.pad(channels.astype(np.float32), ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    acc = np.zeros_like(padded)
    hits = np.zeros(padded.shape[:2], dtype=np.float32)
    threshold = np.float32(3.0 * sigma)
    for oy in range(0, block, step):
        for ox in range(0, block, step):
            ny = (padded.shape[0] - oy) // block
            nx = (padded.shape[1] - ox) // block
            window = padded[oy : oy + ny * block, ox : ox + nx * block]
            # Tiles as (ny, b, nx, b, c); the 1-D DCT runs along each block axis in turn. Plain
            # (non-BLAS) einsum is fast for 8x8 factors and does not fight other processes for cores.
            tiles = np.ascontiguousarray(window).reshape(ny, block, nx, block, c)
            coef = _along_axis3(np.einsum("ub,ybxvc->yuxvc", d, tiles), d)
            keep = np.abs(coef) >= threshold
            keep[:, 0, :, 0, :] = True
            coef *= keep
            rec = np.einsum("ub,yuxvc->ybxvc", d, _along_axis3(coef, d.T))
            acc[oy : oy + ny * block, ox : ox + nx * block] += rec.reshape(ny * block, nx * block, c)
            hits[oy : oy + ny * block, ox : ox + nx * block] += 1.0
    out = acc / np.maximum(hits, 1.0)[..., None]
    return out[pad : pad + h, pad : pad + w].astype(np.float64)


@kadis_type(levels=(0.01, 0.03, 0.05, 0.1, 0.15))
def denoise(x: np.ndarray, var: float, rng: np.random.Generator) -> np.ndarray:
    """`imdenoise`: Gaussian noise of variance `var`, then a denoiser applied to each RGB plane.

    The toolbox uses MATLAB's pretrained DnCNN (`denoisingNetwork('DnCNN')`), which is proprietary
    and not available in Python. The classical stand-in here is sliding-window DCT hard
    thresholding at 3 sigma (8x8 windows, stride 2), per channel like the original: it leaves the
    same kind of residue, over-smoothed texture and blotchy low-frequency noise, growing with `var`.
    """
    noisy = imnoise_gaussian(x, var, rng)
    return truncate(dct_denoise(noisy, math.sqrt(var)))


# ---------------------------------------------------------------------------------------------
# Type 26: pink noise (VIPNet `additional_distortion_generator.m`, case 26)


def pink_noise_field(size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size field of 2-D noise as the authors' `randnd(-1, size)` computes it.

    White Gaussian noise is multiplied in the Fourier domain by M = (kx^2 + ky^2)^(beta/2), the DC term
    removed, then rescaled to the white noise's own mean and standard deviation. With beta = -1 the
    code's multiplier is |k|^-1 on the amplitude, so the power spectrum falls as |k|^-2 (its comment
    speaks of 1/f power; the code is followed, and a test measures the slope).
    """
    white = rng.standard_normal((size, size))
    k = np.fft.fftfreq(size) * size
    k2 = k[:, None] ** 2 + k[None, : size // 2 + 1] ** 2  # the half-spectrum of a real field
    multiplier = np.zeros_like(k2)
    nonzero = k2 > 0
    multiplier[nonzero] = k2[nonzero] ** (-1.0 / 2.0)  # M.^(beta/2) with M = k^2 and beta = -1
    shaped = np.fft.irfft2(np.fft.rfft2(white) * multiplier, s=(size, size))
    shaped = (shaped - shaped.mean()) / shaped.std(ddof=1)
    return (shaped + white.mean()) * white.std(ddof=1)


@uint8_type(levels=(0.061, 0.127, 0.211, 0.316, 0.543))
def pink_noise(image: np.ndarray, weight: float, rng: np.random.Generator) -> np.ndarray:
    """Type 26: per-channel 512x512 pink noise scaled to max |n| = 1, resized (bicubic) to the image,
    times 255*`weight`, added to the uint8 image, floored and saturated to uint8."""
    h, w = image.shape[:2]
    planes = []
    for _ in range(3):
        field = pink_noise_field(512, rng)
        field = field / np.abs(field).max()
        resized = Image.fromarray(field.astype(np.float32)).resize((w, h), Image.Resampling.BICUBIC)
        planes.append(np.asarray(resized, dtype=np.float64))
    noise = np.stack(planes, axis=-1) * 255.0 * weight
    return np.clip(np.floor(image.astype(np.float64) + noise), 0, 255).astype(np.uint8)
