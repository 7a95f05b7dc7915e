"""Small caches with their enhanced images, and a randomly initialised tiny ImageNet classifier
(tests have no pretrained weights; the selection rule only needs some classifier's softmax)."""

from __future__ import annotations

from pathlib import Path

import torch

from iqa_cli.models.checkpoint import save_checkpoint
from iqa_cli.models.vit import ViTEncoder
from tests.train.caches import make_cache


def tiny_classifier(path: Path, seed: int = 0) -> Path:
    """A 64 px, 2-block ViT with a 1000-way head, in the DeiT key layout."""
    torch.manual_seed(seed)
    encoder = ViTEncoder(img_size=64, patch_size=16, embed_dim=64, depth=2, num_heads=1, imagenet_head=True)
    return save_checkpoint(encoder.state_dict(), path)


def enhanced_cache(folder: Path, out: Path, *, n: int = 32, seed: int = 0, selection: bool = True) -> Path:
    """A cache (`tests.train.caches.make_cache`) plus its `<cache>.enhanced.h5` (built-in enhancement)."""
    from iqa_cli.enhance.prepare import enhance_cache

    make_cache(out.stem, folder, out, n=n, seed=seed)
    classifier = tiny_classifier(folder / "classifier.safetensors") if selection else None
    enhance_cache(out, selection=selection, classifier=str(classifier), device="cpu")
    return out
