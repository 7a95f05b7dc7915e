"""BoTNet-50 as VIPNet uses it: the distortion perception model (DPM) and its 150-way pre-training head.

A ResNet-50 layout (stages [3, 4, 6, 3], widths 64/128/256/512, expansion 4) whose last stage replaces
every 3x3 convolution by multi-head self-attention with learned relative position terms. Details that
differ from a torchvision ResNet and matter for the authors' weights:

- the shortcut projection is a 1x1 conv WITH bias, then BN, and carries the stride;
- stages 2 and 3 put the stride on the 3x3 conv; stage 4 block 0 runs attention at 1/16 resolution
  and then average-pools 2x2 (after the attention, before bn2);
- attention has no 1/sqrt(d) scaling, and its position term is pos(query position) . q(key position),
  as in the BoTNet port VIPNet builds on (see `RelPosSelfAttention`);
- the pre-training head is AdaptiveAvgPool(2, 2) -> flatten (8192) -> Dropout(0.4) -> Linear(8192, 150).

The resolution is fixed at construction (the position parameters are sized for it); it must be a
multiple of 32. VIPNet feeds it 288x384 (HxW) YCbCr images.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional as F

from iqa_cli.errors import ConfigError, DataError
from iqa_cli.models.registry import StateDict, register_model

EXPANSION = 4
DISTORTION_CLASSES = 150  # 30 distortion types x 5 levels
DPM_RESOLUTION = (288, 384)  # (H, W): 0.75 x (384, 512)

TINY_BOTNET = dict(layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), heads=2, resolution=(64, 96))


class RelPosSelfAttention(nn.Module):
    """BoTNet multi-head self-attention over an (H, W) map with learned per-row and per-column terms.

    For query position i and key position j (row-major over H x W), per head:
        logits[i, j] = q_i . k_j + pos_i . q_j,   pos = pos_h (row term) + pos_w (column term),
        out_i = sum_j softmax_j(logits[i, :]) v_j,
    with no 1/sqrt(d) scaling. `pos_h` is (1, heads, d, H, 1) and `pos_w` (1, heads, d, 1, W); the
    authors call them `rel_w` and `rel_h` respectively (their names are swapped relative to the axes).
    """

    def __init__(self, dim: int, size: tuple[int, int], heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads, self.size = heads, tuple(size)
        head_dim = dim // heads
        self.query = nn.Conv2d(dim, dim, kernel_size=1)
        self.key = nn.Conv2d(dim, dim, kernel_size=1)
        self.value = nn.Conv2d(dim, dim, kernel_size=1)
        self.pos_h = nn.Parameter(torch.randn(1, heads, head_dim, size[0], 1))
        self.pos_w = nn.Parameter(torch.randn(1, heads, head_dim, 1, size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if (h, w) != self.size:
            raise DataError(f"attention sized for a {self.size[0]}x{self.size[1]} map, got {h}x{w}")
        shape = (b, self.heads, c // self.heads, h * w)  # (B, heads, d, N)
        q, k, v = self.query(x).view(shape), self.key(x).view(shape), self.value(x).view(shape)
        pos = (self.pos_w + self.pos_h).view(1, self.heads, c // self.heads, h * w)
        logits = q.transpose(-2, -1) @ k + pos.transpose(-2, -1) @ q  # (B, heads, N_query, N_key)
        attn = logits.softmax(dim=-1)
        return (v @ attn.transpose(-2, -1)).view(b, c, h, w)


class BoTBlock(nn.Module):
    """Bottleneck: 1x1 -> (3x3 conv | attention [+ 2x2 avg-pool]) -> 1x1 (x4), plus the shortcut."""

    def __init__(
        self, in_channels: int, width: int, stride: int = 1, attn_size: tuple[int, int] | None = None, heads: int = 16
    ) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2: nn.Conv2d | None
        self.attn: RelPosSelfAttention | None
        self.shortcut: nn.Module
        if attn_size is None:
            self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=1, bias=False)
            self.attn = None
        else:
            self.conv2 = None
            self.attn = RelPosSelfAttention(width, attn_size, heads)
            # The stride of an attention block is this pool, applied after the attention.
            self.pool = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            # Conv2d's default bias=True: the authors' projection has a bias (torchvision's does not).
            self.shortcut = nn.Sequential(
                OrderedDict(
                    conv=nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride),
                    bn=nn.BatchNorm2d(out_channels),
                )
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        mixed = self.pool(self.attn(out)) if self.attn is not None else cast(nn.Conv2d, self.conv2)(out)
        out = F.relu(self.bn2(mixed))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class BoTNet(nn.Module):
    """BoTNet-50 trunk (stem + 4 stages) with an optional distortion-class head.

    `num_classes=None` gives the trunk only (VIPNet's DPM branch): `forward` returns the last feature
    map, (B, 4*widths[3], H/32, W/32). Otherwise `forward` returns (B, num_classes) logits.
    """

    def __init__(
        self,
        *,
        layers: Sequence[int] = (3, 4, 6, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        heads: int = 16,
        resolution: Sequence[int] = DPM_RESOLUTION,
        num_classes: int | None = DISTORTION_CLASSES,
        dropout: float = 0.4,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ConfigError(f"BoTNet needs 4 stages, got layers={tuple(layers)} widths={tuple(widths)}")
        height, width = (int(v) for v in resolution)
        if height % 32 or width % 32:
            raise ConfigError(f"BoTNet resolution must be a multiple of 32, got {height}x{width}")
        self.resolution = (height, width)
        self.conv1 = nn.Conv2d(3, widths[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = widths[0]
        stages = []
        for index, (blocks, planes) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if index == 0 else 2
            # Stage 4 attends at 1/16 of the input in block 0 (which then pools), at 1/32 after.
            attn_sizes: list[tuple[int, int] | None] = (
                [(height // 16, width // 16), *[(height // 32, width // 32)] * (blocks - 1)]
                if index == 3
                else [None] * blocks
            )
            stage = []
            for b in range(blocks):
                stage.append(BoTBlock(channels, planes, stride if b == 0 else 1, attn_sizes[b], heads))
                channels = planes * EXPANSION
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = channels
        self.num_classes = num_classes
        if num_classes is not None:
            self.pool = nn.AdaptiveAvgPool2d((2, 2))
            self.dropout = nn.Dropout(dropout)
            self.classifier = nn.Linear(channels * 4, num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        """The authors' pre-training init: kaiming-normal conv/linear weights (rel. positions stay randn)."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != self.resolution:
            h, w = self.resolution
            raise DataError(f"BoTNet expects (B, 3, {h}, {w}) input, got {tuple(x.shape)}")

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of stages 1-4."""
        self._check_input(x)
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        outs = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            outs.append(x)
        return outs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.flatten(self.pool(features), 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.forward_features(x)
        return features if self.num_classes is None else self.forward_head(features)


# Authors' names inside one BoTNet block -> ours. `conv2.0.*` only exists in attention blocks.
_BLOCK_RENAMES = (
    (re.compile(r"\.conv2\.0\.rel_h$"), ".attn.pos_w"),
    (re.compile(r"\.conv2\.0\.rel_w$"), ".attn.pos_h"),
    (re.compile(r"\.conv2\.0\.(query|key|value)\."), r".attn.\1."),
    (re.compile(r"\.shortcut\.0\."), ".shortcut.conv."),
    (re.compile(r"\.shortcut\.1\."), ".shortcut.bn."),
)


def rename_block_keys(key: str) -> str:
    """One authors' BoTNet key (any prefix) in our names: attention and shortcut modules renamed."""
    for pattern, new in _BLOCK_RENAMES:
        key = pattern.sub(new, key)
    return key


def convert_original(state: StateDict) -> StateDict:
    """Authors' BoTNet-50 (`pretraining/BoTNet.py`, `fc.1.*`, `conv2.0.rel_h`, ...) -> our names."""
    return {re.sub(r"^fc\.1\.", "classifier.", rename_block_keys(k)): v for k, v in state.items()}


@register_model(
    "vipnet-dpm",
    description="VIPNet distortion perception model: BoTNet-50 (MHSA in stage 4, 16 heads) classifying "
    "150 synthetic distortions (30 types x 5 levels); the DPM branch of VIPNet",
    inputs="ycbcr: (B,3,288,384) PIL-YCbCr, normalised with mean (0.448,0.483,0.491) std (0.248,0.114,0.106)",
    convert_original=convert_original,
    tiny_config=dict(TINY_BOTNET),
)
def build_vipnet_dpm(**config: Any) -> BoTNet:
    return BoTNet(**config)
