"""IEIT's "probability for image selection": an ImageNet classifier's confidence on I and on E.

The authors' (commented-out) producer runs the stock DeiT-S ImageNet classifier on the centre 224 crop
of the 244 resize with ImageNet normalisation; an enhanced image is kept iff its max softmax is not
below the original's (methods spec §2.2). Any timm/DeiT-layout ViT classifier with a 1000-way head
can stand in (`--classifier FILE`); its architecture is read from the tensor shapes (heads of 64
dimensions, as in every DeiT), and the 244 -> 224 resize/crop ratio is kept at its input size.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from iqa_cli.enhance import DEFAULT_CLASSIFIER
from iqa_cli.errors import CheckpointError, DownloadError
from iqa_cli.models.imagenet import imagenet_normalize
from iqa_cli.models.vit import IMAGENET_CLASSES, ViTEncoder, load_pretrained_encoder

SOURCE_RATIO = 244 / 224  # the classifier sees the centre crop of a resize this much larger
HEAD_DIM = 64
RULE = "keep E iff max softmax(E) >= max softmax(I); centre crop of the 244/224 resize, ImageNet normalisation"
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def classifier_file(spec: str, *, switch_off: str | None) -> Path:
    """The classifier's checkpoint (weights-store name or file), or one line saying how to get it (and,
    where the command has one, which switch turns the rule off)."""
    from iqa_cli.weights.resolve import resolve_weights

    try:
        return resolve_weights(spec)
    except (CheckpointError, DownloadError) as exc:
        other = f", name another ViT classifier with --classifier FILE, or turn the rule off with {switch_off}"
        raise CheckpointError(
            f"the enhanced-image selection rule needs the ImageNet classifier '{spec}', which is not available "
            f"({exc}); get it with `iqa weights fetch {DEFAULT_CLASSIFIER}` (or `iqa weights add` a file)"
            + (other if switch_off else "")
        ) from None


def build_classifier(path: str | Path) -> ViTEncoder:
    """A ViT ImageNet classifier shaped like the checkpoint at `path`, with its weights loaded."""
    from iqa_cli.models.checkpoint import read_state_dict

    state, _ = read_state_dict(path)
    needed = ("cls_token", "pos_embed", "patch_embed.proj.weight", "head.weight", "blocks.0.mlp.fc1.weight")
    missing = [k for k in needed if k not in state]
    if missing or tuple(state.get("head.weight", torch.empty(0)).shape[:1]) != (IMAGENET_CLASSES,):
        what = f"lacks {', '.join(missing)}" if missing else "has no 1000-way head"
        raise CheckpointError(f"not a ViT ImageNet classifier (timm/DeiT layout): it {what}", path=path)
    dim = int(state["cls_token"].shape[-1])
    patch = int(state["patch_embed.proj.weight"].shape[-1])
    tokens = int(state["pos_embed"].shape[1]) - 1
    grid = int(round(tokens**0.5))
    if grid * grid != tokens:
        raise CheckpointError(f"not a square-input ViT classifier ({tokens} position tokens)", path=path)
    depth = 1 + max(int(m.group(1)) for k in state if (m := _BLOCK.match(k)))
    encoder = ViTEncoder(
        img_size=grid * patch,
        patch_size=patch,
        embed_dim=dim,
        depth=depth,
        num_heads=max(1, dim // HEAD_DIM),
        mlp_ratio=int(state["blocks.0.mlp.fc1.weight"].shape[0]) / dim,
        imagenet_head=True,
    )
    return load_pretrained_encoder(encoder, path).eval()


def cached_classifier(path: str, device: str) -> ViTEncoder:
    """One loaded classifier per (file, device), for scoring user images batch after batch. The file's
    identity is part of the key: a checkpoint replaced under the same name (`iqa weights add --force`
    while a Python session holds a scorer) is read again, not served from memory."""
    try:
        info = Path(path).stat()
    except OSError:  # gone: the loader names the file and what is wrong
        return build_classifier(path).to(torch.device(device))
    return _loaded_classifier(path, device, (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns))


@lru_cache(maxsize=2)
def _loaded_classifier(path: str, device: str, _identity: tuple[int, int, int, int]) -> ViTEncoder:
    return build_classifier(path).to(torch.device(device))


def classifier_inputs(images: list[torch.Tensor], size: int) -> torch.Tensor:
    """uint8 (3, h, w) images -> normalised centre `size` crops of their `size * 244/224` square resize."""
    from iqa_cli.train.augment import resize_square

    side = int(round(size * SOURCE_RATIO))
    x = resize_square(images, side)
    offset = (side - size) // 2
    return imagenet_normalize(x[..., offset : offset + size, offset : offset + size])


@torch.inference_mode()
def probabilities(classifier: ViTEncoder, images: list[torch.Tensor]) -> torch.Tensor:
    """Softmax (n, 1000) of the classifier on uint8 (3, h, w) images (any sizes)."""
    from iqa_cli.models.ieit import imagenet_probabilities

    size = int(classifier.patch_embed.img_size[0])
    return imagenet_probabilities(classifier, classifier_inputs(images, size)).float()


def selection(
    classifier: ViTEncoder, originals: list[torch.Tensor], enhanced: list[torch.Tensor]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(keep_enhanced bool, max softmax of I, max softmax of E), each (n,), by the authors' rule."""
    from iqa_cli.models.ieit import select_enhanced

    p_original, p_enhanced = probabilities(classifier, originals), probabilities(classifier, enhanced)
    keep = select_enhanced(p_original, p_enhanced)
    return (
        keep.cpu().numpy(),
        p_original.max(dim=1).values.cpu().numpy(),
        p_enhanced.max(dim=1).values.cpu().numpy(),
    )
