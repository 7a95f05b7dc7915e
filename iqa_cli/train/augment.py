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

__all__ = ["batch_crop_flip", "imagenet_normalize", "random_crop_flip", "resize_square", "resize_to"]


def resize_to(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 (n, 3, h, w) -> uint8 (n, 3, height, width), bicubic, aspect ratio ignored.

    Bicubic with a = -0.75 and half-pixel centres and no antialiasing, like OpenCV's `INTER_CUBIC`
    that the authors' caches were made with (borders differ slightly: clamped here, reflected there).
    """
    if tuple(images.shape[-2:]) == (height, width):
        return images
    x = F.interpolate(images.float(), size=(height, width), mode="bicubic", align_corners=False, antialias=False)
    return x.round_().clamp_(0, 255).to(torch.uint8)


def resize_square(images: list[torch.Tensor], side: int) -> torch.Tensor:
    """Resize each uint8 (3, h, w) image to side x side; images of equal size are resized together."""
    if not images:
        raise ValueError("no images to resize")
    out = torch.empty((len(images), 3, side, side), dtype=torch.uint8, device=images[0].device)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape[-2:]), []).append(i)
    for positions in groups.values():
        batch = torch.stack([images[i] for i in positions])
        out[positions] = resize_to(batch, side, side)
    return out


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
    step = torch.arange(size)
    rows = tops[:, None] + step
    cols = torch.where(flips[:, None], lefts[:, None] + size - 1 - step, lefts[:, None] + step)
    device = images.device
    batch = torch.arange(b, device=device)[:, None, None]
    out = images[batch, :, rows.to(device)[:, :, None], cols.to(device)[:, None, :]]  # (b, size, size, c)
    return out.permute(0, 3, 1, 2).contiguous()
