"""VT-IQA, the released ("simplified") model.

One DeiT-S encoder (shared weights) reads two 224 px views of an image: the global view, a 224 crop
of the image resized to 244, and the local view, a 7x7 mosaic of 32 px patches cut at native scale
from the image resized to 768. The two class tokens are joined (768-d) and regressed to a 1-5 score
by Dropout(0.5)-768-64-ReLU-8-ReLU-1. The views themselves are made by `iqa_cli.models.vtiqa_views`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from iqa_cli.models.registry import StateDict, register_model
from iqa_cli.models.vit import (
    TINY_VIT,
    ViTEncoder,
    load_pretrained_encoder,
    nest_under,
    regression_head,
    vit_config,
)


class VTIQA(nn.Module):
    """`forward(x_global, x_mosaic)` -> (B, 1) score; both inputs ImageNet-normalised (B, 3, S, S)."""

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] = (64, 8),
        dropout: float = 0.5,
        backbone_weights: str | Path | None = None,
        **vit: int | float,
    ) -> None:
        super().__init__()
        self.backbone = ViTEncoder(**vit_config(**vit))
        if backbone_weights is not None:
            load_pretrained_encoder(self.backbone, backbone_weights)
        self.head = regression_head(2 * self.backbone.embed_dim, hidden, dropout)

    def features(self, x_global: torch.Tensor, x_mosaic: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two class-token features; two separate passes through the shared encoder, as the authors ran it."""
        return self.backbone(x_global), self.backbone(x_mosaic)

    def forward(self, x_global: torch.Tensor, x_mosaic: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat(self.features(x_global, x_mosaic), dim=1))


def convert_original(state: StateDict) -> StateDict:
    """Authors' names (`cls_token`, `blocks.*`, `head.1.*`) -> ours (`backbone.*`, `head.*`)."""
    return nest_under(state, "backbone.", keep=("head.",))


@register_model(
    "vtiqa",
    description="VT-IQA (released simplified model): DeiT-S/16 shared over a global 224 crop and a 7x7 "
    "mosaic of 32 px native-resolution patches, head 768-64-8-1",
    inputs="x_global, x_mosaic: (B,3,224,224) each, ImageNet-normalised",
    convert_original=convert_original,
    tiny_config=dict(TINY_VIT),
)
def build_vtiqa(**config: Any) -> VTIQA:
    return VTIQA(**config)
