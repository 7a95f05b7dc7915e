"""Device-side image operations on uint8 batches: resizing, random crops and flips, normalisation.

Everything is a tensor op on whatever device the batch lives on, so augmentation never leaves the
GPU. Crop/flip randomness comes from a CPU generator seeded per batch, which makes the result a
function of the batch seed only (identical on every DDP rank, after resumption, and on CPU or GPU).

Two crop rules:
* per batch (the esnthere protocol, methods spec §0.3; the faithful default): one offset pair for the
  whole batch, the whole batch flipped iff the column offset is in the lower half of its range; this
  is `iqa_cli.models.vtiqa.train_crop_offsets` + `global_view`, reused by `batch_crop_flip`.
* per image (`random_crop_flip`): independent offsets and flips for every image (the usual practice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from iqa_cli.models.vit import imagenet_normalize
from iqa_cli.models.vtiqa import global_view, train_crop_offsets

__all__ = [
    "batch_crop_flip",
    "crop_flip_at",
    "imagenet_normalize",
    "random_crop_flip",
    "resize_each",
    "resize_square",
    "resize_to",
]


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
    x = F.interpolate(images.float(), size=(height, width), mode=mode, align_corners=False, antialias=antialias)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def resize_each(images: list[torch.Tensor], height: int, width: int, *, pil: str | None = None) -> torch.Tensor:
    """Resize each uint8 (3, h, w) image to height x width (see `resize_to`); equal sizes go together."""
    if not images:
        raise ValueError("no images to resize")
    out = torch.empty((len(images), 3, height, width), dtype=torch.uint8, device=images[0].device)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault((int(image.shape[-2]), int(image.shape[-1])), []).append(i)
    for positions in groups.values():
        batch = torch.stack([images[i] for i in positions])
        out[positions] = resize_to(batch, height, width, pil=pil)
    return out


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
