"""VIPNet: content (CPM) and distortion (DPM) perception joined by a small interaction transformer (VIM).

- CPM: a torchvision-layout ResNet-50 (timm's ResNet, same tensor names) whose four stage outputs go
  through 1x1 side convs without bias (256->128, 512->256, 1024->512, each average-pooled to the
  layer-4 grid, and 2048->1152 unpooled) and are concatenated: (B, 2048, H/32, W/32).
- DPM: the BoTNet-50 trunk of `iqa_cli.models.botnet` (pre-trained as `vipnet-dpm`), on the YCbCr view.
- VIM: [content, distortion] channels (4096) -> 1x1 conv to 128-d tokens (108 at 288x384), a class
  token, learned positions, 2 pre-norm layers (16 heads of 64, MLP 512, exact GELU), no final norm.
- Head: LayerNorm(128) + Linear(128, 1) on the class token.

`forward(rgb, ycbcr)` takes two (B, 3, 288, 384) views of the same crop: RGB ImageNet-normalised and
PIL-YCbCr normalised with the repository's statistics (`normalize_rgb`, `rgb_to_ycbcr`,
`normalize_ycbcr`). It returns (B,) scores; unlike the authors' `q.squeeze()` a batch of one stays (1,).

Both backbones are frozen by default, as in the authors' configuration; how their BatchNorm layers
behave while training is the explicit `frozen_bn` choice (see `VIPNet.freeze_branches`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from iqa_cli.errors import CheckpointError, ConfigError, DataError
from iqa_cli.models.botnet import DPM_RESOLUTION, TINY_BOTNET, BoTNet, rename_block_keys
from iqa_cli.models.botnet import convert_original as convert_dpm_original
from iqa_cli.models.checkpoint import mismatch_report, read_state_dict, unwrap_state_dict
from iqa_cli.models.registry import StateDict, register_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The repository's statistics of PIL YCbCr images scaled to [0, 1].
YCBCR_MEAN = (0.448, 0.483, 0.491)
YCBCR_STD = (0.248, 0.114, 0.106)

FROZEN_BN_MODES = ("train", "eval")

TINY_VIPNET = dict(
    resolution=TINY_BOTNET["resolution"],
    cpm_layers=(1, 1, 1, 1),
    cpm_widths=(8, 16, 32, 64),
    cpm_channels=256,
    dpm_layers=TINY_BOTNET["layers"],
    dpm_widths=TINY_BOTNET["widths"],
    dpm_heads=TINY_BOTNET["heads"],
    embed_dim=16,
    depth=1,
    num_heads=2,
    dim_head=8,
)


# ----------------------------------------------------------------------------------------------
# Input helpers


def _normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(3, 1, 1)
    return (x - m) / s


def normalize_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB images (or floats in [0, 1]), channel axis -3 -> ImageNet-normalised float32 (CPM input)."""
    return _normalize(images, IMAGENET_MEAN, IMAGENET_STD)


def normalize_ycbcr(images: torch.Tensor) -> torch.Tensor:
    """uint8 YCbCr images (or floats in [0, 1]), channel axis -3 -> VIPNet-normalised float32 (DPM input)."""
    return _normalize(images, YCBCR_MEAN, YCBCR_STD)


# PIL's RGB->YCbCr (libImaging/ConvertYCbCr.c) is fixed point: each channel value indexes a table of
# round-half-up(coefficient * value * 2^6) (C truncation of x + 0.5), the three entries are summed and
# arithmetically shifted right by 6. The JPEG/JFIF coefficients:
_SCALE_BITS = 6
_YCBCR_COEFFS = (
    (0.29900, 0.58700, 0.11400),
    (-0.16874, -0.33126, 0.50000),
    (0.50000, -0.41869, -0.08131),
)
_YCBCR_OFFSETS = (0, 128, 128)


def _ycbcr_tables(device: torch.device) -> torch.Tensor:
    """(3 outputs, 3 inputs, 256) int32 lookup tables, as PIL builds them."""
    values = torch.arange(256, dtype=torch.float64)
    coeffs = torch.tensor(_YCBCR_COEFFS, dtype=torch.float64)
    tables = torch.trunc(coeffs[:, :, None] * values * (1 << _SCALE_BITS) + 0.5)
    return tables.to(device=device, dtype=torch.int32)


def rgb_to_ycbcr(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (..., 3, H, W) -> uint8 YCbCr, bit-exact with PIL's `Image.convert('YCbCr')`."""
    if images.dtype != torch.uint8 or images.dim() < 3 or images.shape[-3] != 3:
        raise DataError(
            f"rgb_to_ycbcr expects uint8 RGB images (..., 3, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    tables = _ycbcr_tables(images.device)
    idx = images.long()
    channels = []
    for out in range(3):
        total = (
            tables[out, 0][idx[..., 0, :, :]] + tables[out, 1][idx[..., 1, :, :]] + tables[out, 2][idx[..., 2, :, :]]
        )
        # `>>` on signed ints is an arithmetic (flooring) shift, as in C for PIL's negative sums.
        channels.append((total >> _SCALE_BITS) + _YCBCR_OFFSETS[out])
    return torch.stack(channels, dim=-3).clamp_(0, 255).to(torch.uint8)


def vipnet_views(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB crops (B, 3, H, W) -> (ImageNet-normalised RGB, normalised YCbCr): VIPNet's two inputs."""
    return normalize_rgb(rgb), normalize_ycbcr(rgb_to_ycbcr(rgb))


# ----------------------------------------------------------------------------------------------
# Network


# The content branch's backbones of the authors' `configs.py --cpm`: block type and blocks per stage.
CPM_ARCHS: dict[str, tuple[type[nn.Module], tuple[int, ...]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ContentPerception(nn.Module):
    """Multi-scale ResNet: stage outputs -> 1x1 side convs -> pooled to the layer-4 grid -> concatenated.

    Single-scale (`multi_scale=False`, the authors' `--multi_scale` switched off): the layer-4 map alone,
    no side convs (its width: 512 for ResNet-18/34, 2048 for ResNet-50)."""

    def __init__(
        self,
        *,
        layers: Sequence[int],
        widths: Sequence[int],
        out_channels: int,
        grid: tuple[int, int],
        block: type[nn.Module] = Bottleneck,
        multi_scale: bool = True,
    ) -> None:
        super().__init__()
        self.backbone = ResNet(
            cast(Any, block),  # timm annotates an instance where it takes the block class
            tuple(layers),
            channels=tuple(widths),
            stem_width=widths[0],
            num_classes=0,
            global_pool="",
            zero_init_last=False,
        )
        expansion = int(getattr(block, "expansion", 1))
        stage_channels = [w * expansion for w in widths]
        self.multi_scale = multi_scale
        if not multi_scale:
            self.sides = nn.ModuleList()
            self.out_channels = stage_channels[-1]
            return
        side_widths = [c // 2 for c in stage_channels[:3]]
        last = out_channels - sum(side_widths)
        if last <= 0:
            raise ConfigError(f"cpm_channels={out_channels} leaves no room for the layer-4 side branch")
        side_widths.append(last)
        self.sides = nn.ModuleList(
            nn.Conv2d(c, s, kernel_size=1, bias=False) for c, s in zip(stage_channels, side_widths, strict=True)
        )
        self.side_pool = nn.AdaptiveAvgPool2d(grid)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net: Any = self.backbone  # timm's ResNet stages are registered children (untyped attributes)
        x = net.maxpool(net.act1(net.bn1(net.conv1(x))))
        if not self.multi_scale:
            return net.layer4(net.layer3(net.layer2(net.layer1(x))))
        features = []
        for index, stage in enumerate((net.layer1, net.layer2, net.layer3, net.layer4)):
            x = stage(x)
            side = self.sides[index](x)
            # Layer 4 is already at the grid; the authors do not pool it.
            features.append(side if index == 3 else self.side_pool(side))
        return torch.cat(features, dim=1)


class SelfAttention(nn.Module):
    """Multi-head attention with its own inner width (heads x dim_head), qkv without bias."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.scale = heads, dim_head**-0.5
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.proj = nn.Linear(heads * dim_head, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, N, d)
        attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, -1)
        return self.proj_drop(self.proj(out))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dim_head, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class InteractionTransformer(nn.Module):
    """VIM: concatenated feature maps -> 1x1-conv tokens + class token + positions -> encoder layers."""

    def __init__(
        self,
        *,
        in_channels: int,
        grid: tuple[int, int],
        dim: int,
        depth: int,
        heads: int,
        dim_head: int,
        mlp_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, kernel_size=1)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, grid[0] * grid[1] + 1, dim))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, dim_head, mlp_dim, dropout) for _ in range(depth))
        # The authors' "xavier" bound uses 3 input channels whatever the real count (4096): kept as is.
        bound = math.sqrt(6.0 / (3 + dim))
        nn.init.uniform_(self.embed.weight, -bound, bound)
        if self.embed.bias is not None:
            nn.init.zeros_(self.embed.bias)

    def forward(self, content: torch.Tensor, distortion: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(torch.cat([content, distortion], dim=1)).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x)
        return x


class VIPNet(nn.Module):
    """`forward(rgb, ycbcr)` -> (B,) quality scores; both inputs (B, 3, H, W) at `resolution`."""

    def __init__(
        self,
        *,
        resolution: Sequence[int] = DPM_RESOLUTION,
        cpm_arch: str = "resnet50",
        cpm_layers: Sequence[int] | None = None,
        cpm_widths: Sequence[int] = (64, 128, 256, 512),
        cpm_channels: int = 2048,
        multi_scale: bool = True,
        dpm_layers: Sequence[int] = (3, 4, 6, 3),
        dpm_widths: Sequence[int] = (64, 128, 256, 512),
        dpm_heads: int = 16,
        embed_dim: int = 128,
        depth: int = 2,
        num_heads: int = 16,
        dim_head: int = 64,
        mlp_dim: int | None = None,
        dropout: float = 0.4,
        freeze_cpm: bool = True,
        freeze_dpm: bool = True,
        frozen_bn: str = "train",
        cpm_weights: str | Path | None = None,
        dpm_weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        height, width = (int(v) for v in resolution)
        if height % 32 or width % 32:
            raise ConfigError(f"VIPNet resolution must be a multiple of 32, got {height}x{width}")
        self.resolution = (height, width)
        grid = (height // 32, width // 32)
        if cpm_arch not in CPM_ARCHS:
            raise ConfigError(f"unknown VIPNet content backbone '{cpm_arch}' (known: {', '.join(CPM_ARCHS)})")
        block, arch_layers = CPM_ARCHS[cpm_arch]
        self.cpm = ContentPerception(
            layers=cpm_layers or arch_layers,
            widths=cpm_widths,
            out_channels=cpm_channels,
            grid=grid,
            block=block,
            multi_scale=multi_scale,
        )
        self.dpm = BoTNet(
            layers=dpm_layers, widths=dpm_widths, heads=dpm_heads, resolution=resolution, num_classes=None
        )
        self.vim = InteractionTransformer(
            in_channels=self.cpm.out_channels + self.dpm.out_channels,
            grid=grid,
            dim=embed_dim,
            depth=depth,
            heads=num_heads,
            dim_head=dim_head,
            mlp_dim=mlp_dim or 4 * embed_dim,
            dropout=dropout,
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, 1)
        if cpm_weights is not None:
            load_cpm_weights(self, cpm_weights)
        if dpm_weights is not None:
            load_dpm_weights(self, dpm_weights)
        self.frozen_bn = "train"
        self._frozen: tuple[nn.Module, ...] = ()
        self.freeze_branches(cpm=freeze_cpm, dpm=freeze_dpm, bn_mode=frozen_bn)

    def freeze_branches(self, *, cpm: bool = True, dpm: bool = True, bn_mode: str = "train") -> VIPNet:
        """Freeze the CPM backbone (its side convs stay trainable) and/or the whole DPM.

        `bn_mode` says what the frozen branches' BatchNorm layers do while the model is in train mode:
        - "train" (the authors' behaviour, the default): they follow `model.train()`, so training
          batches normalise with batch statistics and keep updating the running mean/var, even though
          the weights are frozen; evaluation then uses the drifted statistics.
        - "eval": they stay in eval mode, so the pre-trained running statistics are used and never change.
        The two choices give different results; "train" reproduces the paper's code.
        """
        if bn_mode not in FROZEN_BN_MODES:
            raise ConfigError(f"frozen BatchNorm mode must be one of {', '.join(FROZEN_BN_MODES)}, not '{bn_mode}'")
        for branch, frozen in ((self.cpm.backbone, cpm), (self.dpm, dpm)):
            for p in branch.parameters():
                p.requires_grad_(not frozen)
        self._frozen = tuple(b for b, frozen in ((self.cpm.backbone, cpm), (self.dpm, dpm)) if frozen)
        self.frozen_bn = bn_mode
        return self.train(self.training)

    def train(self, mode: bool = True) -> VIPNet:
        super().train(mode)
        if self.frozen_bn == "eval":
            for branch in self._frozen:
                for module in branch.modules():
                    if isinstance(module, _BatchNorm):
                        module.eval()
        return self

    def _check_inputs(self, rgb: torch.Tensor, ycbcr: torch.Tensor) -> None:
        want = (3, *self.resolution)
        if rgb.dim() != 4 or tuple(rgb.shape[1:]) != want or ycbcr.shape != rgb.shape:
            raise DataError(
                f"VIPNet expects rgb and ycbcr of shape (B, {', '.join(map(str, want))}), "
                f"got {tuple(rgb.shape)} and {tuple(ycbcr.shape)}"
            )

    def features(self, rgb: torch.Tensor, ycbcr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(content map, distortion map, VIM tokens incl. class token at index 0)."""
        self._check_inputs(rgb, ycbcr)
        content, distortion = self.cpm(rgb), self.dpm(ycbcr)
        return content, distortion, self.vim(content, distortion)

    def forward(self, rgb: torch.Tensor, ycbcr: torch.Tensor) -> torch.Tensor:
        tokens = self.features(rgb, ycbcr)[2]
        return self.head(self.norm(tokens[:, 0])).squeeze(-1)


# ----------------------------------------------------------------------------------------------
# Checkpoints: the authors' names, DPM pre-training weights, ImageNet ResNet-50 weights

_VIM_RENAMES = (
    (r"^vim\.patch_embedding\.proj\.", "vim.embed."),
    (r"^vim\.pos_embedding$", "vim.pos_embed"),
    (r"^vim\.transformer\.layers\.(\d+)\.0\.norm\.", r"vim.layers.\1.norm1."),
    (r"^vim\.transformer\.layers\.(\d+)\.0\.fn\.to_qkv\.", r"vim.layers.\1.attn.qkv."),
    (r"^vim\.transformer\.layers\.(\d+)\.0\.fn\.to_out\.0\.", r"vim.layers.\1.attn.proj."),
    (r"^vim\.transformer\.layers\.(\d+)\.1\.norm\.", r"vim.layers.\1.norm2."),
    (r"^vim\.transformer\.layers\.(\d+)\.1\.fn\.net\.0\.", r"vim.layers.\1.mlp.fc1."),
    (r"^vim\.transformer\.layers\.(\d+)\.1\.fn\.net\.3\.", r"vim.layers.\1.mlp.fc2."),
)
# The authors' DPM (and single-scale CPM) is Sequential(conv1, bn1, relu, maxpool, layer1..layer4).
_DPM_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def _rename_original_key(key: str) -> str:
    if key.startswith("cpm."):
        side = re.match(r"^cpm\.side_layer([1-4])\.0\.weight$", key)
        if side:
            return f"cpm.sides.{int(side.group(1)) - 1}.weight"
        child = re.match(r"^cpm\.(\d+)\.", key)  # single-scale: Sequential(conv1, bn1, relu, maxpool, layer1..4)
        if child and child.group(1) in _DPM_CHILDREN:
            return f"cpm.backbone.{_DPM_CHILDREN[child.group(1)]}." + key[child.end() :]
        if not key.startswith(("cpm.backbone.", "cpm.sides.")):
            return "cpm.backbone." + key[len("cpm.") :]
        return key
    if key.startswith("dpm."):
        child = re.match(r"^dpm\.(\d+)\.", key)
        if child and child.group(1) in _DPM_CHILDREN:
            key = f"dpm.{_DPM_CHILDREN[child.group(1)]}." + key[child.end() :]
        return rename_block_keys(key)
    for pattern, new in _VIM_RENAMES:
        key = re.sub(pattern, new, key)
    return key


def convert_original(state: StateDict) -> StateDict:
    """Authors' VIPNet names (`cpm.side_layer1.0`, `dpm.4.*`, `vim.transformer.layers.*`) -> ours."""
    return {_rename_original_key(k): v for k, v in state.items()}


def _read(source: str | Path | Mapping[str, Any]) -> tuple[StateDict, dict[str, str], str | Path]:
    if isinstance(source, (str, Path)):
        state, meta = read_state_dict(source)
        return state, meta, source
    return unwrap_state_dict(source), {}, "<state dict>"


def load_dpm_weights(model: VIPNet, source: str | Path | Mapping[str, Any]) -> VIPNet:
    """Load a pre-trained DPM into `model.dpm`: a `vipnet-dpm` checkpoint of ours, or the authors'
    `botnet_model_best.pth.tar` (`state_dict`, DataParallel `module.` names). The classifier is dropped."""
    state, meta, where = _read(source)
    if meta.get("model") not in (None, "vipnet-dpm"):
        raise CheckpointError(f"checkpoint is for model '{meta['model']}', not the DPM 'vipnet-dpm'", path=where)
    expected = model.dpm.state_dict()
    # The authors' names are renamed, ours pass through unchanged; the 150-way head is not part of VIPNet.
    state = {k: v for k, v in convert_dpm_original(state).items() if not k.startswith("classifier.")}
    report = mismatch_report(expected, state)
    if report:
        raise CheckpointError(f"not a VIPNet DPM (BoTNet-50) checkpoint for this model: {report}", path=where)
    model.dpm.load_state_dict(state)
    return model


def load_cpm_weights(model: VIPNet, source: str | Path | Mapping[str, Any]) -> VIPNet:
    """Load ImageNet ResNet-50 weights (torchvision/timm layout, e.g. `resnet50-0676ba61.pth`) into the
    CPM backbone; the ImageNet classifier `fc.*` is dropped, the side convs keep their initialisation."""
    state, _, where = _read(source)
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    report = mismatch_report(model.cpm.backbone.state_dict(), state)
    if report:
        raise CheckpointError(f"not a ResNet checkpoint for the VIPNet content branch: {report}", path=where)
    model.cpm.backbone.load_state_dict(state)
    return model


@register_model(
    "vipnet",
    description="VIPNet: multi-scale ResNet-50 content branch + BoTNet-50 distortion branch (YCbCr), "
    "2-layer interaction transformer over their 9x12 maps, CLS head 128-1",
    inputs="rgb, ycbcr: (B,3,288,384) each; rgb ImageNet-normalised, ycbcr PIL-YCbCr normalised with "
    "mean (0.448,0.483,0.491) std (0.248,0.114,0.106)",
    convert_original=convert_original,
    tiny_config=dict(TINY_VIPNET),
)
def build_vipnet(**config: Any) -> VIPNet:
    return VIPNet(**config)
