"""ImageNet input normalisation, the last step of every view that enters a DeiT/ViT network.

Kept apart from the network files so the data path (views, crops, mosaics) never imports timm: a
prefetch thread making views would otherwise wait for timm's import (seconds) that the main thread is
running to build the network.
"""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_NORMALIZE: dict[tuple[str, bool], tuple[torch.Tensor, torch.Tensor]] = {}


def _normalize_constants(device: torch.device, from_uint8: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) with x * scale + shift == (x / 255 - mean) / std (or (x - mean) / std), per
    channel, cached per device so the hot path copies nothing to the device."""
    key = (str(device), from_uint8)
    if key not in _NORMALIZE:
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float64)
        scale = 1.0 / (std * (255.0 if from_uint8 else 1.0))
        shift = -mean / std
        _NORMALIZE[key] = tuple(t.to(device, torch.float32).view(3, 1, 1) for t in (scale, shift))  # type: ignore[assignment]
    return _NORMALIZE[key]


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (or floats in [0, 1]) -> float32 ImageNet-normalised, channel axis -3.

    One conversion pass and one fused multiply-add on the new tensor (the obvious `(x/255 - mean)/std`
    makes three full passes; this is the data path's hottest line)."""
    from_uint8 = images.dtype == torch.uint8
    scale, shift = _normalize_constants(images.device, from_uint8)
    x = images.to(torch.float32, memory_format=torch.contiguous_format, copy=True)
    return x.mul_(scale).add_(shift)
