"""The DeiT-S/16 (ViT) encoder shared by VT-IQA and IEIT, built on timm's VisionTransformer.

The authors' encoder is the timm 0.3 / DeiT ViT: pre-norm blocks, exact (erf) GELU, LayerNorm eps 1e-6,
qkv bias, attention scale head_dim^-0.5, and the final-LayerNorm class token as the feature. timm 1.x
computes exactly that (its fused attention is PyTorch's SDPA) and uses the same state-dict names, so
the authors' checkpoints map onto it name for name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from iqa_cli.errors import CheckpointError
from iqa_cli.models.checkpoint import mismatch_report, read_state_dict
from iqa_cli.models.registry import StateDict

# DeiT-Small/16 at 224 px: the configuration every VT-IQA / IEIT checkpoint was trained with.
DEIT_SMALL: dict[str, int | float] = {
    "img_size": 224,
    "patch_size": 16,
    "embed_dim": 384,
    "depth": 12,
    "num_heads": 6,
    "mlp_ratio": 4.0,
}
# Narrow, shallow, 64 px: builds and runs forward/backward on a CPU in milliseconds (tests only).
TINY_VIT: dict[str, int | float] = {
    "img_size": 64,
    "patch_size": 16,
    "embed_dim": 64,
    "depth": 2,
    "num_heads": 2,
    "mlp_ratio": 4.0,
}
IMAGENET_CLASSES = 1000
LAYER_NORM_EPS = 1e-6


# LayerNorm with the authors' eps (timm passes device/dtype through, so keep it a partial).
layer_norm = partial(nn.LayerNorm, eps=LAYER_NORM_EPS)


class ViTEncoder(VisionTransformer):
    """ViT whose `forward(x)` returns the final-LayerNorm class token, shape (B, embed_dim).

    `imagenet_head=True` keeps the Linear(embed_dim, 1000) classifier that the authors' backbones
    carry (VT-IQA org, IEIT): it is never used for quality, but it is in their checkpoints, and it
    is the DeiT classifier that IEIT's enhanced-image selection relies on (see `classify`).
    """

    def __init__(
        self,
        *,
        img_size: int = 224,
        patch_size: int = 16,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        imagenet_head: bool = False,
    ) -> None:
        super().__init__(
            img_size=img_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            num_classes=IMAGENET_CLASSES if imagenet_head else 0,
            global_pool="token",
            class_token=True,
            norm_layer=layer_norm,
            act_layer=nn.GELU,  # exact erf GELU, as in the DeiT code the authors copied
        )
        self.has_imagenet_head = imagenet_head

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False) -> torch.Tensor:
        """Pre-logits features (B, dim). The mask arguments keep timm's signature (older timm lacks them)."""
        if attn_mask is None and not is_causal:
            return self.forward_head(self.forward_features(x), pre_logits=True)
        return self.forward_head(self.forward_features(x, attn_mask=attn_mask, is_causal=is_causal), pre_logits=True)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000) from the kept classifier head."""
        if not self.has_imagenet_head:
            raise RuntimeError("this encoder was built without its ImageNet head")
        return self.head(self(x))


def vit_config(**overrides: Any) -> dict[str, Any]:
    """DeiT-S settings with `overrides` (unknown names are refused, so typos do not pass silently)."""
    unknown = set(overrides) - set(DEIT_SMALL)
    if unknown:
        raise TypeError(f"unknown ViT settings: {', '.join(sorted(unknown))}")
    return {**DEIT_SMALL, **overrides}


def regression_head(in_features: int, hidden: Iterable[int] = (64, 8), dropout: float = 0.5) -> nn.Sequential:
    """Dropout -> Linear -> ReLU -> ... -> Linear(., 1), the authors' quality heads.

    The Sequential indices (Linear layers at 1, 3, 5) are the authors' key names `head.1`, `head.3`, ...
    """
    layers: list[nn.Module] = [nn.Dropout(dropout)]
    width = in_features
    for out in hidden:
        layers += [nn.Linear(width, out), nn.ReLU()]
        width = out
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def rename_prefixes(state: Mapping[str, torch.Tensor], mapping: Mapping[str, str]) -> StateDict:
    """Rename keys by their first matching prefix in `mapping` (order matters); others stay."""
    renamed: StateDict = {}
    for key, value in state.items():
        for old, new in mapping.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        renamed[key] = value
    return renamed


def nest_under(state: Mapping[str, torch.Tensor], prefix: str, keep: tuple[str, ...]) -> StateDict:
    """Put every key not starting with one of `keep` (or with `prefix` already) under `prefix`."""
    return {(k if k.startswith((prefix, *keep)) else prefix + k): v for k, v in state.items()}


def load_pretrained_encoder(encoder: ViTEncoder, path: str | Path) -> ViTEncoder:
    """Load ImageNet DeiT-S weights (e.g. `deit_small_patch16_224.pth`, key `model`) into `encoder`.

    The ImageNet classifier is taken along when the encoder keeps one and dropped otherwise; every
    other tensor must be present with the right shape.
    """
    state, _ = read_state_dict(path)
    if not encoder.has_imagenet_head:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    report = mismatch_report(encoder.state_dict(), state)
    if report:
        raise CheckpointError(f"not a DeiT-S/ViT backbone checkpoint for this encoder: {report}", path=path)
    encoder.load_state_dict(state)
    return encoder
