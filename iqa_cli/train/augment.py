"""Device-side image operations on uint8 batches: resizing, random crops and flips, normalisation.

Everything is a tensor op on whatever device the batch lives on, so augmentation never leaves the
GPU. Crop/flip randomness comes from a CPU generator seeded per batch, which makes the result a
function of the batch seed only (identical on every DDP rank, after resumption, and on CPU or GPU).

Two crop rules:
* per batch (the esnthere protocol, methods spec §0.3; the faithful default): one offset pair for the
  whole batch, the whole batch flipped iff the column offset is in the lower half of its range; this
  is `iqa_cli.models.vtiqa_views.train_crop_offsets` + `global_view`, reused by `batch_crop_flip`.
* per image (`random_crop_flip`): independent offsets and flips for every image (the usual practice).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from fractions import Fraction

import torch
import torch.nn.functional as F

from iqa_cli.models.imagenet import imagenet_normalize
from iqa_cli.models.vtiqa_views import global_view, train_crop_offsets

__all__ = [
    "batch_crop_flip",
    "crop_flip_at",
    "imagenet_normalize",
    "random_crop_flip",
    "resize_each",
    "resize_spans",
    "resize_square",
    "resize_to",
    "same_size_batches",
]

# On the CPU a float resize is made a few images at a time, so the float result is still in cache when
# it is rounded to uint8 (the same pixels, less memory traffic).
CPU_CHUNK_BYTES = 8 * 2**20
Span = tuple[int, int]  # [start, stop) of output rows or columns


def resize_to(images: torch.Tensor, height: int, width: int, *, pil: str | None = None) -> torch.Tensor:
    """uint8 (n, 3, h, w) -> uint8 (n, 3, height, width), aspect ratio ignored.

    Default: bicubic with a = -0.75 and half-pixel centres and no antialiasing, like OpenCV's
    `INTER_CUBIC` that the authors' caches were made with (borders differ slightly: clamped here,
    reflected there). `pil="bilinear"|"bicubic"`: Pillow's filter instead (`Image.resize`, and
    torchvision's `Resize` on PIL images), whose kernel widens when downscaling (antialiasing) and
    whose bicubic uses a = -0.5; within 1-2 grey levels of Pillow.
    """
    if tuple(images.shape[-2:]) == (height, width):
        return images
    mode, antialias = ("bicubic", False) if pil is None else (pil, True)
    n, c = images.shape[:2]
    float_bytes = 4 * c * max(height * width, images.shape[-2] * images.shape[-1])  # per image: larger of in, out
    step = n if images.device.type != "cpu" else max(1, CPU_CHUNK_BYTES // float_bytes)
    if step >= n:
        return _resize_float(images, height, width, mode, antialias)
    out = torch.empty((n, c, height, width), dtype=torch.uint8, device=images.device)
    for start in range(0, n, step):
        out[start : start + step] = _resize_float(images[start : start + step], height, width, mode, antialias)
    return out


def _resize_float(images: torch.Tensor, height: int, width: int, mode: str, antialias: bool) -> torch.Tensor:
    x = images.contiguous().float()  # the kernel is slower on channels-last strides (same values)
    x = F.interpolate(x, size=(height, width), mode=mode, align_corners=False, antialias=antialias)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def resize_spans(
    images: torch.Tensor, height: int, width: int, row_spans: Sequence[Span], col_spans: Sequence[Span]
) -> torch.Tensor:
    """Only some output pixels of `resize_to(images, height, width)`: the rows in `row_spans` and the
    columns in `col_spans`, each concatenated in order; bit-identical to cutting them from the full resize.

    Where the source-to-output ratio of a side has a power-of-two denominator (384 -> 768; 768 -> 768
    when only the other side changes), every output pixel's source position is exact in float, so
    resizing a crop of the source (with a margin for the 4-tap kernel, starting on a whole period of the
    ratio) does the same arithmetic on the same pixels as the full resize, and only the spans'
    neighbourhoods are computed. Other sides are resized whole and then cut.
    """
    n, c, in_h, in_w = images.shape
    row_parts = _span_parts(in_h, height, row_spans)
    col_parts = _span_parts(in_w, width, col_spans)
    out_h, out_w = sum(b - a for a, b in row_spans), sum(b - a for a, b in col_spans)
    out = torch.empty((n, c, out_h, out_w), dtype=torch.uint8, device=images.device)
    top = 0
    for rows in row_parts:
        left = 0
        for cols in col_parts:
            crop = images[:, :, rows.source[0] : rows.source[1], cols.source[0] : cols.source[1]]
            part = _keep(_keep(resize_to(crop, rows.size, cols.size), 2, rows.keep), 3, cols.keep)
            out[:, :, top : top + rows.kept, left : left + cols.kept] = part
            left += cols.kept
        top += rows.kept
    return out


def resize_each(images: list[torch.Tensor], height: int, width: int, *, pil: str | None = None) -> torch.Tensor:
    """Resize each uint8 (3, h, w) image to height x width (see `resize_to`); equal sizes go together."""
    return _by_size(images, (height, width), lambda batch: resize_to(batch, height, width, pil=pil))


def same_size_batches(images: list[torch.Tensor]) -> list[tuple[list[int], torch.Tensor]]:
    """The images grouped by size: (positions in `images`, their (n, 3, h, w) contiguous batch)."""
    if not images:
        raise ValueError("no images to resize")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault((int(image.shape[-2]), int(image.shape[-1])), []).append(i)
    return [(positions, torch.stack([images[i] for i in positions])) for positions in groups.values()]


def _by_size(
    images: list[torch.Tensor], out_size: tuple[int, int], resize: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    groups = same_size_batches(images)
    out = torch.empty((len(images), 3, *out_size), dtype=torch.uint8, device=images[0].device)
    for positions, batch in groups:
        out[positions] = resize(batch)
    return out


class _Part:
    """One crop of a side: source [start, stop) resized to `size` pixels, of which the `keep` spans are kept."""

    def __init__(self, source: Span, size: int, keep: list[Span]) -> None:
        self.source, self.size, self.keep = source, size, keep
        self.kept = sum(b - a for a, b in keep)


def _keep(x: torch.Tensor, dim: int, spans: list[Span]) -> torch.Tensor:
    if len(spans) == 1 and spans[0] == (0, x.shape[dim]):
        return x
    return torch.cat([x.narrow(dim, a, b - a) for a, b in spans], dim)


def _span_parts(source: int, size: int, spans: Sequence[Span]) -> list[_Part]:
    for a, b in spans:
        if not 0 <= a < b <= size:
            raise ValueError(f"span [{a}, {b}) is outside the {size} px resize")
    ratio = Fraction(source, size)  # source pixels per output pixel, p / q
    p, q = ratio.numerator, ratio.denominator
    if q & (q - 1) or p * (2 * size + 1) >= 2**24:
        return [_Part((0, source), size, list(spans))]  # positions not exact in float: the whole side
    parts = []
    for a, b in spans:
        # Output pixel y reads source pixels floor((p*(2y+1) - q) / 2q) - 1 ... + 2 (bicubic, half-pixel centres).
        first = max(0, (p * (2 * a + 1) - q) // (2 * q) - 1)
        last = min(source, (p * (2 * (b - 1) + 1) - q) // (2 * q) + 3)
        start, stop = first // p * p, min(source, math.ceil(last / p) * p)
        out_start = start // p * q  # the crop's output pixel 0 is this one of the full resize
        parts.append(_Part((start, stop), (stop - start) // p * q, [(a - out_start, b - out_start)]))
    return parts


def resize_square(images: list[torch.Tensor], side: int) -> torch.Tensor:
    """Resize each uint8 (3, h, w) image to side x side; images of equal size are resized together."""
    return resize_each(images, side, side)


def batch_crop_flip(images: torch.Tensor, size: int, seed: int) -> torch.Tensor:
    """The esnthere rule: one crop for the whole batch, flipped iff the column offset < range/2."""
    top, left, flip = train_crop_offsets(seed, images.shape[-1] - size)
    x = global_view(images, top, left, size)
    return x.flip(-1) if flip else x


def random_crop_flip(images: torch.Tensor, size: int, seed: int, flip: bool = True) -> torch.Tensor:
    """Independent size x size crop (and 50 % horizontal flip) per image, in one gather."""
    b, _, h, w = images.shape
    if h < size or w < size:
        raise ValueError(f"images are {h}x{w}, smaller than the {size} px crop")
    g = torch.Generator().manual_seed(seed)
    tops = torch.randint(h - size + 1, (b,), generator=g)
    lefts = torch.randint(w - size + 1, (b,), generator=g)
    flips = torch.rand(b, generator=g) < 0.5 if flip else torch.zeros(b, dtype=torch.bool)
    return crop_flip_at(images, tops, lefts, flips, size, size)


def crop_flip_at(
    images: torch.Tensor,
    tops: torch.Tensor,
    lefts: torch.Tensor,
    flips: torch.Tensor,
    height: int,
    width: int,
    source: torch.Tensor | None = None,
) -> torch.Tensor:
    """Crop i: height x width at (tops[i], lefts[i]) of `images[source[i]]` (default: of `images[i]`),
    mirrored where flips[i]; all crops in one gather. `tops`, `lefts` (int), `flips` (bool) and
    `source` (int) are (n,) tensors on any device; `source` cuts several crops from one image."""
    device = images.device
    rows = tops.to(device)[:, None] + torch.arange(height, device=device)
    step = torch.arange(width, device=device)
    left = lefts.to(device)[:, None]
    cols = torch.where(flips.to(device)[:, None], left + width - 1 - step, left + step)
    batch = torch.arange(images.shape[0], device=device) if source is None else source.to(device)
    batch = batch[:, None, None]
    out = images[batch, :, rows[:, :, None], cols[:, None, :]]  # (n, height, width, c)
    return out.permute(0, 3, 1, 2).contiguous()
