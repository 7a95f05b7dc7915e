"""Type 27, chromatic aberration (VIPNet `ChromaticAberrations.m`), with its PSNR-targeted search.

A candidate CA(i, k) shifts channel 1 (R) right by i-1 px and channel 2 (G) right by round(i/2)-1 px
(the columns uncovered on the left keep the channel's own first columns), leaves channel 3 alone,
and blurs with a k x k Gaussian of sigma k/6 ('symmetric' padding; the result is rounded to uint8).
The search walks i = 1..25 (outer) and k in (1, 2, 3, 4, 5, 7, 9, 15, 20, 25, 30) (inner) and, per
level, keeps a candidate whose PSNR is within a shrinking gap of 33 / 30 / 27 / 24 / 21 dB and whose
(i, k-index) lies in that level's range. The if/elseif chain is reproduced as written: a candidate
enters the first bracket it matches (level 1 also takes anything above 33 dB) and is only kept if
it is in that level's range, except in the level-1 bracket, whose code assigns the level-1 image
for every candidate that enters it before the range test: the image written for level 1 is the last
candidate to enter that bracket, in range or not, while the "found" flag and the shrinking gap move
only for candidates in range. An image gets type 27 only if all five levels were found; otherwise
the function raises `NotApplicable` and the generator skips the pair (VIPNet walked further
references instead).

Resolution of the non-integer shift: the released helper indexes columns with `level/2`, which
MATLAB rejects for odd `level` (i = 1 already fails), so the code as published cannot have produced
the data. The earlier variant of the same distortion, left commented out in
`additional_distortion_generator.m`, uses `round(level/2)`; we use that (MATLAB rounding, halves
up), i.e. channel 2 moves by round(i/2) - 1 px.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
from scipy import ndimage

from iqa_cli.distort.base import NotApplicable, uint8_type
from iqa_cli.distort.ops import gaussian_kernel_1d, round_half_away

KERNEL_SIZES = (1, 2, 3, 4, 5, 7, 9, 15, 20, 25, 30)
SHIFTS = range(1, 26)
TARGETS_DB = (33.0, 30.0, 27.0, 24.0, 21.0)
INITIAL_GAP_DB = 2.0


def _in_range(level: int, i: int, l_idx: int) -> bool:
    """The per-level admissible (shift i, 1-based kernel index l) ranges of the MATLAB search."""
    if level == 1:
        return l_idx <= 2 and i <= 4
    if level == 2:
        return 2 <= l_idx <= 5 and i <= 20
    if level == 3:
        return 3 <= l_idx <= 6 and i <= 20
    if level == 4:
        return 3 <= l_idx <= 8 and 5 <= i <= 20
    return 5 <= l_idx <= 11 and 7 <= i <= 25


def _shift_columns(channel: np.ndarray, i: int) -> np.ndarray:
    """Columns i.. take columns 0..W-i (1-based `X2(:, i:end) = X(:, 1:end-i+1)`); the first i-1 stay."""
    if i <= 1:
        return channel
    w = channel.shape[1]
    return np.concatenate([channel[:, : i - 1], channel[:, : w - i + 1]], axis=1)


def _blur_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    if size == 1:
        return x
    # MATLAB's imfilter centres a kernel at floor((size+1)/2) (1-based); scipy at size//2 (0-based).
    origin = -1 if size % 2 == 0 else 0
    kernel = gaussian_kernel_1d(size, size / 6.0).astype(np.float32)
    return ndimage.correlate1d(x, kernel, axis=axis, mode="reflect", origin=origin)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.uint8)


def render(image: np.ndarray, i: int, size: int) -> np.ndarray:
    """The candidate CA(i, size) of `image` (uint8 H x W x 3)."""
    out = image.copy()
    k = int(round_half_away(i / 2.0))
    out[..., 0] = _shift_columns(image[..., 0], i)
    out[..., 1] = _shift_columns(image[..., 1], k)
    x = out.astype(np.float32)
    x = _blur_axis(_blur_axis(x, size, 0), size, 1)
    return _to_uint8(x) if size > 1 else out


def search(image: np.ndarray) -> list[tuple[int, int]] | None:
    """Run the MATLAB search; return the chosen (shift i, kernel size) for levels 1..5, or None.

    Only the PSNR of each candidate is needed, so the work is shared: the vertical blur commutes
    with the column shift (done once per kernel size), channel 3 never changes, and channel 2's
    shift only depends on round(i/2).
    """
    ref = image.astype(np.float32)
    n = float(image.size)
    gaps = list((INITIAL_GAP_DB,) * 5)
    chosen: list[tuple[int, int] | None] = [None] * 5
    vertical = {size: _blur_axis(ref, size, 0) for size in KERNEL_SIZES}
    sse_cache: dict[tuple[int, int, int], float] = {}

    def channel_sse(c: int, shift: int, size: int) -> float:
        key = (c, shift, size)
        if key not in sse_cache:
            moved = _shift_columns(vertical[size][..., c], shift)
            blurred = _to_uint8(_blur_axis(moved, size, 1)).astype(np.float32)
            sse_cache[key] = float(np.sum((blurred - ref[..., c]) ** 2, dtype=np.float64))
        return sse_cache[key]

    found = [False] * 5
    for i in SHIFTS:
        k = int(round_half_away(i / 2.0))
        for l_idx, size in enumerate(KERNEL_SIZES, start=1):
            # Every candidate is measured: any of them can enter the level-1 bracket (see the docstring).
            sse = channel_sse(0, i, size) + channel_sse(1, k, size) + channel_sse(2, 1, size)
            psnr = float("inf") if sse == 0 else 10.0 * np.log10(255.0**2 * n / sse)
            # The if/elseif chain of the MATLAB code, bracket by bracket.
            if psnr > TARGETS_DB[0] or abs(psnr - TARGETS_DB[0]) < gaps[0]:
                bracket = 0
                chosen[0] = (i, size)  # `distorted_img_1 = distorted_img;` before the range test
            else:
                near = next((b for b in range(1, 5) if abs(psnr - TARGETS_DB[b]) < gaps[b]), None)
                if near is None:
                    continue
                bracket = near
            if _in_range(bracket + 1, i, l_idx):
                chosen[bracket] = (i, size)
                gaps[bracket] = abs(psnr - TARGETS_DB[bracket])
                found[bracket] = True
    if not all(found):
        return None
    return chosen  # type: ignore[return-value]


# The five levels of one reference are generated one after the other; remembering the last few
# searches keeps the function pure while doing the ~200-candidate search once per image.
_CACHE: OrderedDict[bytes, list[tuple[int, int]] | None] = OrderedDict()
_CACHE_SIZE = 4


def cached_search(image: np.ndarray) -> list[tuple[int, int]] | None:
    key = hashlib.blake2b(image.tobytes(), digest_size=16, person=str(image.shape).encode()[:16]).digest()
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    result = search(image)
    _CACHE[key] = result
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return result


@uint8_type(levels=TARGETS_DB)
def chromatic_aberration(image: np.ndarray, target_db: float, rng: np.random.Generator) -> np.ndarray:
    """Type 27: the searched CA candidate for the level whose PSNR target is `target_db`."""
    chosen = cached_search(image)
    if chosen is None:
        raise NotApplicable("chromatic aberration: the PSNR search found no candidate for every level")
    i, size = chosen[TARGETS_DB.index(target_db)]
    return render(image, i, size)
