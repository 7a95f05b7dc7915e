"""IEIT's bilateral network (the authors' `MyModel3`) and its enhanced-image selection rule.

Two independent DeiT-S encoders (their unused 1000-way ImageNet heads kept, as in the release) read
the original image I and its enhanced ("intermediary") version E:
* regressor 1 (the score): Dropout-1152-64-ReLU-8-ReLU-1 on [enc1(I), enc2(I), enc2(E)];
* regressor 2 (training only, the low-quality branch): Dropout-768-64-ReLU-8-ReLU-1 on [enc2(I), enc2(E)].
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iqa_cli.models.registry import StateDict, register_model
from iqa_cli.models.vit import (
    TINY_VIT,
    ViTEncoder,
    load_pretrained_encoder,
    regression_head,
    rename_prefixes,
    vit_config,
)

# Authors' attribute names -> ours.
ORIGINAL_NAMES = {"model1.": "encoder1.", "model2.": "encoder2.", "model3.": "regressor1.", "model4.": "regressor2."}


class IEIT(nn.Module):
    """`forward(x_original, x_enhanced)` -> (B, 1) score; inputs ImageNet-normalised (B, 3, 224, 224)."""

    def __init__(
        self,
        *,
        hidden: tuple[int, ...] = (64, 8),
        dropout: float = 0.5,
        backbone_weights: str | Path | None = None,
        **vit: int | float,
    ) -> None:
        super().__init__()
        self.encoder1 = ViTEncoder(**vit_config(**vit), imagenet_head=True)
        if backbone_weights is not None:
            load_pretrained_encoder(self.encoder1, backbone_weights)
        # Both encoders start from the same weights and then train apart (the authors' deepcopy).
        self.encoder2 = copy.deepcopy(self.encoder1)
        dim = self.encoder1.embed_dim
        self.regressor1 = regression_head(3 * dim, hidden, dropout)
        self.regressor2 = regression_head(2 * dim, hidden, dropout)

    def features(
        self, x_original: torch.Tensor, x_enhanced: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(enc1(I), enc2(I), enc2(E)), each (B, dim)."""
        return self.encoder1(x_original), self.encoder2(x_original), self.encoder2(x_enhanced)

    def forward(
        self,
        x_original: torch.Tensor,
        x_enhanced: torch.Tensor,
        x_poor_original: torch.Tensor | None = None,
        x_poor_enhanced: torch.Tensor | None = None,
        *,
        mode: str = "score",
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """`mode="score"` (inference): regressor 1's score (B, 1). The training steps go through
        `forward` too, so DDP sees every trainable parameter: "stage1" -> `forward_both`, "stage2" ->
        `forward_stage2` (which also takes the low-quality pair)."""
        if mode == "score":
            return self.regressor1(torch.cat(self.features(x_original, x_enhanced), dim=1))
        if mode == "stage1":
            return self.forward_both(x_original, x_enhanced)
        if mode == "stage2":
            if x_poor_original is None or x_poor_enhanced is None:
                raise ValueError("stage 2 needs the low-quality pair (x_poor_original, x_poor_enhanced)")
            return self.forward_stage2(x_original, x_enhanced, x_poor_original, x_poor_enhanced)
        raise ValueError(f"unknown IEIT forward mode '{mode}' (score, stage1, stage2)")

    def forward_both(self, x_original: torch.Tensor, x_enhanced: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(regressor 1 score, regressor 2 score) on one pair: the stage-1 training outputs."""
        f1_i, f2_i, f2_e = self.features(x_original, x_enhanced)
        return self.regressor1(torch.cat([f1_i, f2_i, f2_e], dim=1)), self.regressor2(torch.cat([f2_i, f2_e], dim=1))

    def score_pair(self, x_original: torch.Tensor, x_enhanced: torch.Tensor) -> torch.Tensor:
        """Regressor 2 alone on [enc2(I), enc2(E)]: stage 2's low-quality branch."""
        return self.regressor2(torch.cat([self.encoder2(x_original), self.encoder2(x_enhanced)], dim=1))

    def forward_stage2(
        self,
        x_original: torch.Tensor,
        x_enhanced: torch.Tensor,
        x_poor_original: torch.Tensor,
        x_poor_enhanced: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The authors' stage-2 step: (regressor 1 on features computed without gradients, regressor 2
        on the low-quality pair with gradients). Encoder 2 therefore learns only through the
        low-quality branch, and regressor 1 trains on frozen features."""
        with torch.no_grad():
            features = self.features(x_original, x_enhanced)
        return self.regressor1(torch.cat(features, dim=1)), self.score_pair(x_poor_original, x_poor_enhanced)


def select_enhanced(prob_original: torch.Tensor, prob_enhanced: torch.Tensor) -> torch.Tensor:
    """Bool mask (N,): keep the enhanced image iff max softmax(E) >= max softmax(I).

    Inputs are class-probability rows (N, classes), e.g. a DeiT-S ImageNet classifier's softmax on the
    two centre crops (the authors' `op_*` / `op_*2` arrays). Where False, use the original image.
    """
    prob_original = torch.as_tensor(prob_original)
    prob_enhanced = torch.as_tensor(prob_enhanced)
    if prob_original.shape != prob_enhanced.shape or prob_original.dim() != 2:
        raise ValueError(
            f"expected two (N, classes) probability arrays of one shape, got "
            f"{tuple(prob_original.shape)} and {tuple(prob_enhanced.shape)}"
        )
    return prob_enhanced.max(dim=1).values >= prob_original.max(dim=1).values


def apply_selection(original: torch.Tensor, enhanced: torch.Tensor, keep_enhanced: torch.Tensor) -> torch.Tensor:
    """Enhanced images where `keep_enhanced`, else the originals (batch axis 0, any dtype)."""
    mask = keep_enhanced.to(enhanced.device, torch.bool).view(-1, *([1] * (enhanced.dim() - 1)))
    return torch.where(mask, enhanced, original)


def imagenet_probabilities(encoder: ViTEncoder, x: torch.Tensor) -> torch.Tensor:
    """Softmax of an ImageNet classifier encoder (e.g. DeiT-S) on normalised images: (B, 1000)."""
    return encoder.classify(x).softmax(dim=1)


def convert_original(state: StateDict) -> StateDict:
    """Authors' names (`model1.*` ... `model4.*`) -> ours (`encoder1/2.*`, `regressor1/2.*`)."""
    return rename_prefixes(state, ORIGINAL_NAMES)


@register_model(
    "ieit",
    description="IEIT bilateral network: two DeiT-S encoders on the image and its enhanced version, "
    "regressor 1152-64-8-1 (score) and 768-64-8-1 (low-quality branch)",
    inputs="x_original, x_enhanced: (B,3,224,224) each, ImageNet-normalised",
    convert_original=convert_original,
    tiny_config=dict(TINY_VIT),
)
def build_ieit(**config: Any) -> IEIT:
    return IEIT(**config)
