"""VT-IQA, original version (the authors' `test_org/`): sensitivity-guided patches and SA-Fusion.

Three networks, released as three checkpoints:
* `selection`: a DeiT-S quality regressor (head 384-64-8-1). Its input gradient on the global view,
  summed over colour channels and average-pooled 9x9 (224 -> 24x24), says where to cut the mosaic:
  in each 3x3 group of map cells the strongest one picks a 32 px patch of the 768 image.
* `backbone`: DeiT-S returning the class token (its unused 1000-way head is kept, as in the release).
* `fusion` (the authors' "SA-Fusion"): a class token plus [f_global, f_mosaic], 2 transformer blocks
  (dim 384, 1 head, MLP ratio 1, dropout 0.2), final LayerNorm, head on [cls, f_global, f_mosaic]
  1152-32-8-1. It has a positional embedding parameter that the authors never add; we keep it unused
  so their checkpoint loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from timm.layers.weight_init import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn

from iqa_cli.models.checkpoint import load_checkpoint
from iqa_cli.models.imagenet import imagenet_normalize
from iqa_cli.models.registry import StateDict, register_model
from iqa_cli.models.vit import (
    TINY_VIT,
    ViTEncoder,
    layer_norm,
    nest_under,
    regression_head,
    rename_prefixes,
    vit_config,
)
from iqa_cli.models.vtiqa_views import MOSAIC_GRID, MOSAIC_PATCH, cut_mosaic

SALIENCY_POOL = 9  # 224 / 9 -> a 24 x 24 sensitivity map
SELECTION_GROUP = 3  # each mosaic cell searches a 3 x 3 group of map cells
TINY_SELECTION = {"grid": 4, "patch": 16, "pool": 4}  # 64 px input: 16 x 16 map, 4 x 4 mosaic of 16 px

PART_NAMES = {"backbone": "vtiqa-org-backbone", "fusion": "vtiqa-org-fusion", "selection": "vtiqa-org-selection"}


class SAFusion(nn.Module):
    """`forward(tokens)`: tokens (B, 2, dim) = [f_global, f_mosaic] -> score (B, 1)."""

    def __init__(
        self,
        *,
        dim: int = 384,
        num_tokens: int = 2,
        depth: int = 2,
        num_heads: int = 1,
        mlp_ratio: float = 1.0,
        drop: float = 0.2,
        hidden: tuple[int, ...] = (32, 8),
    ) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        # Present in the authors' model and checkpoint, but their forward never adds it.
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens + 1, dim))
        self.pos_drop = nn.Dropout(drop)
        self.blocks = nn.Sequential(
            *[
                Block(dim, num_heads, mlp_ratio, qkv_bias=True, proj_drop=drop, norm_layer=cast(Any, layer_norm))
                for _ in range(depth)
            ]
        )
        self.norm = layer_norm(dim)
        self.head = regression_head(dim * (num_tokens + 1), hidden)
        trunc_normal_(self.cls_token, std=0.02)
        trunc_normal_(self.pos_embed, std=0.02)
        self.apply(_init_linear)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        x = self.norm(self.blocks(self.pos_drop(x)))
        return self.head(torch.cat([x[:, 0], tokens.flatten(1)], dim=1))


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class SelectionNet(nn.Module):
    """The stock timm ViT with a quality head: `forward(x)` -> (B, 1); used only for its input gradient."""

    def __init__(self, *, hidden: tuple[int, ...] = (64, 8), **vit: int | float) -> None:
        super().__init__()
        self.backbone = ViTEncoder(**vit_config(**vit))
        self.head = regression_head(self.backbone.embed_dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


# ---------------------------------------------------------------------------------- patch selection


def input_gradient_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d(sum of model(x))/dx summed over channels, sign kept: (B, H, W). Works under inference_mode."""
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)  # a clone, so inference tensors become usable
        (grad,) = torch.autograd.grad(model(x).sum(), x)
    return grad.sum(dim=1)


def sensitivity_map(model: nn.Module, x: torch.Tensor, pool: int = SALIENCY_POOL) -> torch.Tensor:
    """The raw sensitivity map: input gradient average-pooled pool x pool, stride pool (224 -> 24x24)."""
    return F.avg_pool2d(input_gradient_map(model, x), pool, stride=pool)


def minmax_normalize(cam: torch.Tensor) -> torch.Tensor:
    """Min-max over the whole batch (not per image), as the authors did; a constant map gives zeros."""
    low, high = cam.min(), cam.max()
    if not bool(high > low):
        return torch.zeros_like(cam)
    return (cam - low) / (high - low)


def select_patch_positions(
    cam: torch.Tensor, height: int, width: int, grid: int = MOSAIC_GRID, group: int = SELECTION_GROUP
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left pixels (B, grid, grid) of the mosaic patches in a height x width source image.

    Cell (i, j) takes the strongest map cell (3i+x, 3j+y), x, y in 0..group-1 (first maximum in
    row-major order wins, as the authors' strict `>` scan), and maps map index k to the pixel
    int((group/2 + k) / map_side * side), i.e. 48 + 32k for a 24-cell map of a 768 image. The authors
    used the image height for columns too; their images are square, so we use the width there.
    """
    b, map_h, map_w = cam.shape
    span = grid * group
    if span > min(map_h, map_w):
        raise ValueError(f"a {map_h}x{map_w} map has no {grid}x{grid} grid of {group}x{group} groups")
    groups = cam[:, :span, :span].reshape(b, grid, group, grid, group).permute(0, 1, 3, 2, 4)
    best = groups.reshape(b, grid, grid, group * group).argmax(dim=-1)
    cell = torch.arange(grid, device=cam.device) * group
    k_rows = cell[:, None] + torch.div(best, group, rounding_mode="floor")
    k_cols = cell[None, :] + best % group
    row_pixels = torch.tensor([int((group / 2 + k) / map_h * height) for k in range(map_h)], device=cam.device)
    col_pixels = torch.tensor([int((group / 2 + k) / map_w * width) for k in range(map_w)], device=cam.device)
    return row_pixels[k_rows], col_pixels[k_cols]


# ------------------------------------------------------------------------------------------ network


class VTIQAOriginal(nn.Module):
    """`forward(x_global, images_768)` -> (B, 1): selection -> mosaic -> backbone -> fusion.

    x_global: (B, 3, 224, 224) ImageNet-normalised. images_768: the high-resolution images
    (B, 3, H, W), uint8 (normalised after cutting, as the authors did) or float and already
    ImageNet-normalised (cutting commutes with per-channel normalisation).
    """

    def __init__(
        self,
        *,
        grid: int = MOSAIC_GRID,
        patch: int = MOSAIC_PATCH,
        pool: int = SALIENCY_POOL,
        group: int = SELECTION_GROUP,
        fusion_depth: int = 2,
        fusion_heads: int = 1,
        fusion_drop: float = 0.2,
        **vit: int | float,
    ) -> None:
        super().__init__()
        config = vit_config(**vit)
        size = int(config["img_size"])
        if grid * patch != size or grid * group > size // pool:
            raise ValueError(f"mosaic {grid}x{grid} of {patch} px / pool {pool} do not fit a {size} px input")
        self.grid, self.patch, self.pool, self.group = grid, patch, pool, group
        self.backbone = ViTEncoder(**config, imagenet_head=True)
        dim = self.backbone.embed_dim
        self.fusion = SAFusion(dim=dim, depth=fusion_depth, num_heads=fusion_heads, drop=fusion_drop)
        self.selection = SelectionNet(**config)
        for attr, part_name in PART_NAMES.items():  # each part loads its own released checkpoint
            getattr(self, attr).iqa_model_name = part_name

    def train(self, mode: bool = True) -> VTIQAOriginal:
        """The selection network stays in eval mode: it is a fixed, pretrained guide (no gradient reaches it
        through the score), and its head's Dropout would otherwise make the patch choice random."""
        super().train(mode)
        self.selection.eval()
        return self

    def saliency(self, x_global: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw, normalised) sensitivity maps of the selection network, (B, map, map)."""
        raw = sensitivity_map(self.selection, x_global, self.pool)
        return raw, minmax_normalize(raw)

    def select_mosaic(self, x_global: torch.Tensor, images_768: torch.Tensor) -> torch.Tensor:
        """The sensitivity-selected mosaic, ImageNet-normalised (B, 3, 224, 224)."""
        _, cam = self.saliency(x_global)
        rows, cols = select_patch_positions(cam, images_768.shape[-2], images_768.shape[-1], self.grid, self.group)
        mosaic = cut_mosaic(images_768, rows, cols, self.patch)
        if mosaic.dtype == torch.uint8:
            mosaic = imagenet_normalize(mosaic)
        return mosaic.to(x_global.dtype)

    def features(self, x_global: torch.Tensor, x_mosaic: torch.Tensor) -> torch.Tensor:
        """Backbone class tokens of both views in one batch, as the authors ran it: (2B, dim)."""
        return self.backbone(torch.cat([x_global, x_mosaic], dim=0))

    def score_views(self, x_global: torch.Tensor, x_mosaic: torch.Tensor) -> torch.Tensor:
        feats = self.features(x_global, x_mosaic)
        b = x_global.shape[0]
        return self.fusion(torch.stack([feats[:b], feats[b:]], dim=1))

    def forward(self, x_global: torch.Tensor, images_768: torch.Tensor) -> torch.Tensor:
        return self.score_views(x_global, self.select_mosaic(x_global, images_768))


def load_original_parts(
    model: VTIQAOriginal,
    *,
    backbone: str | Path | Mapping[str, torch.Tensor],
    fusion: str | Path | Mapping[str, torch.Tensor],
    selection: str | Path | Mapping[str, torch.Tensor],
) -> VTIQAOriginal:
    """Load the three released files (VTIQA_org_backbone.pt, _safusion.pt, _slection.pt) into `model`."""
    load_checkpoint(model.backbone, backbone)
    load_checkpoint(model.fusion, fusion)
    load_checkpoint(model.selection, selection)
    return model


def convert_selection(state: StateDict) -> StateDict:
    """Stock timm ViT names (`blocks.*`, `head.1.*`) -> ours (`backbone.blocks.*`, `head.1.*`)."""
    return nest_under(state, "backbone.", keep=("head.",))


def convert_original(state: StateDict) -> StateDict:
    """All three parts in one dict (`backbone.*`, `safusion.*`, `selection.*`) -> our names."""
    state = rename_prefixes(state, {"safusion.": "fusion."})
    selection = {k[len("selection.") :]: v for k, v in state.items() if k.startswith("selection.")}
    rest = {k: v for k, v in state.items() if not k.startswith("selection.")}
    return {**rest, **{"selection." + k: v for k, v in convert_selection(selection).items()}}


_TINY = dict(TINY_VIT)


@register_model(
    "vtiqa-org",
    description="VT-IQA original version: DeiT-S saliency picks the 7x7 mosaic patches, DeiT-S backbone, "
    "2-block SA-Fusion, head 1152-32-8-1",
    inputs="x_global: (B,3,224,224) ImageNet-normalised; images_768: (B,3,768,768) uint8",
    convert_original=convert_original,
    tiny_config={**_TINY, **TINY_SELECTION},
)
def build_vtiqa_org(**config: Any) -> VTIQAOriginal:
    return VTIQAOriginal(**config)


@register_model(
    "vtiqa-org-backbone",
    description="VT-IQA original, part: DeiT-S returning the class token (unused ImageNet head kept)",
    inputs="x: (B,3,224,224) ImageNet-normalised",
    tiny_config=_TINY,
)
def build_vtiqa_org_backbone(**config: Any) -> ViTEncoder:
    return ViTEncoder(**vit_config(**config), imagenet_head=True)


@register_model(
    "vtiqa-org-fusion",
    description="VT-IQA original, part: SA-Fusion transformer over [f_global, f_mosaic], head 1152-32-8-1",
    inputs="tokens: (B,2,384) class tokens of the global view and the mosaic",
    tiny_config={"dim": int(_TINY["embed_dim"])},
)
def build_vtiqa_org_fusion(**config: Any) -> SAFusion:
    return SAFusion(**config)


@register_model(
    "vtiqa-org-selection",
    description="VT-IQA original, part: DeiT-S quality regressor (head 384-64-8-1) whose input gradient "
    "selects the mosaic patches",
    inputs="x: (B,3,224,224) ImageNet-normalised",
    convert_original=convert_selection,
    tiny_config=_TINY,
)
def build_vtiqa_org_selection(**config: Any) -> SelectionNet:
    return SelectionNet(**config)
