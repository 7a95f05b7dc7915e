"""TReS (Golestaneh et al., WACV 2022) as SSL-IQA's default teacher (Nano-cd/SSL_IQA `Tres_modify.Net`).

A torchvision-layout ResNet-50 (`model.*`, its ImageNet classifier kept in the state dict but unused)
gives four stage maps. Each is L2-normalised over channels, L2-pooled (a fixed depthwise 3x3 Hanning
filter on the squared map, then a square root), and average-pooled to the last stage's grid; the four
are concatenated (3840 channels at 7 x 7 for a 224 px input) and run through a two-layer pre-norm
DETR encoder with a sine position embedding added to queries and keys. The head concatenates
fc2(mean of the encoder output) with the mean of the raw last stage map: that 4096-wide `activation`
is what the distillation loss compares, and fc + Softmax give the 5-bin rating distribution.

Generalised on purpose, identical at 224 px: the authors' fixed pools (8, 4, 2 and a final 7 x 7) are
written as "pool each stage to the last stage's grid" and "mean over the grid", so other crop sizes
that are multiples of 32 also work. `arch`, `nhead` and the widths exist for CPU tests; the defaults
are the authors' network.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from iqa_cli.errors import ConfigError

TRES_ARCHS = ("resnet18", "resnet34", "resnet50")
NUM_BINS = 5


class L2Pooling(nn.Module):
    """sqrt(depthwise_conv(x^2, hanning 3x3) + 1e-12). The kernel is a fixed buffer (checkpoints hold it)."""

    filter: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = np.hanning(5)[1:-1]  # [0.5, 1, 0.5]
        kernel = torch.tensor(np.outer(taps, taps), dtype=torch.float32)
        self.register_buffer("filter", (kernel / kernel.sum()).expand(channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x * x, self.filter.to(x.dtype), padding=1, groups=x.shape[1])
        return (out + 1e-12).sqrt()


def sine_position_embedding(
    channels: int, height: int, width: int, *, device: torch.device | None = None
) -> torch.Tensor:
    """DETR's normalised sine embedding of a (height, width) grid with no padding: (1, channels, h, w).

    The first half of the channels encodes the row, the second the column; within each half,
    sin and cos alternate over frequencies 10000^(2 floor(i/2) / (channels/2))."""
    half = channels // 2
    eps, scale = 1e-6, 2 * math.pi
    rows = torch.arange(1, height + 1, dtype=torch.float32, device=device)[:, None].expand(height, width)
    cols = torch.arange(1, width + 1, dtype=torch.float32, device=device)[None, :].expand(height, width)
    rows, cols = rows / (height + eps) * scale, cols / (width + eps) * scale
    index = torch.arange(half, dtype=torch.float32, device=device)
    freqs = 10000 ** (2 * torch.div(index, 2, rounding_mode="floor") / half)

    def encode(coord: torch.Tensor) -> torch.Tensor:
        angles = coord[:, :, None] / freqs  # (h, w, half)
        return torch.stack((angles[:, :, 0::2].sin(), angles[:, :, 1::2].cos()), dim=3).flatten(2)

    return torch.cat((encode(rows), encode(cols)), dim=2).permute(2, 0, 1).unsqueeze(0)


class EncoderLayer(nn.Module):
    """Pre-norm encoder layer: the position is added after norm1, to queries and keys only."""

    def __init__(self, width: int, nhead: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(width, nhead, dropout=dropout)
        self.linear1 = nn.Linear(width, ff)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ff, width)
        self.norm1 = nn.LayerNorm(width)
        self.norm2 = nn.LayerNorm(width)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(src)
        query = normed + pos
        src = src + self.dropout1(self.self_attn(query, query, normed, need_weights=False)[0])
        hidden = self.linear2(self.dropout(F.relu(self.linear1(self.norm2(src)))))
        return src + self.dropout2(hidden)


class Encoder(nn.Module):
    def __init__(self, width: int, nhead: int, layers: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(width, nhead, ff, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return self.norm(src)


class Transformer(nn.Module):
    """(B, C, H, W) -> sequence (HW, B, C) -> encoder -> (B, C, H, W). Weight matrices start Xavier-uniform."""

    def __init__(self, width: int, nhead: int, layers: int, ff: int, dropout: float) -> None:
        super().__init__()
        self.encoder = Encoder(width, nhead, layers, ff, dropout)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = x.flatten(2).permute(2, 0, 1)
        out = self.encoder(seq, pos.flatten(2).permute(2, 0, 1))
        return out.permute(1, 2, 0).reshape(b, c, h, w)


class ResNetStages(nn.Module):
    """A torchvision ResNet whose forward returns the four stage maps (its `fc` stays, unused)."""

    conv1: nn.Conv2d
    bn1: nn.BatchNorm2d
    relu: nn.ReLU
    maxpool: nn.MaxPool2d

    def __init__(self, arch: str) -> None:
        super().__init__()
        net = getattr(torchvision.models, arch)(weights=None)
        for name, child in net.named_children():
            self.add_module(name, child)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        stages = []
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            stages.append(x)
        return stages


class TReSTeacher(nn.Module):
    """forward(x) -> (prob (B, 5), activation (B, 2 * last stage width)); score(x) -> expectation."""

    def __init__(
        self,
        arch: str = "resnet50",
        nhead: int = 16,
        layers: int = 2,
        ff: int = 64,
        dropout: float = 0.5,
        num_classes: int = NUM_BINS,
    ) -> None:
        super().__init__()
        if arch not in TRES_ARCHS:
            raise ConfigError(f"unknown TReS trunk '{arch}' (known: {', '.join(TRES_ARCHS)})")
        self.arch = arch
        stage_widths = [64, 128, 256, 512] if arch in ("resnet18", "resnet34") else [256, 512, 1024, 2048]
        for i, width in enumerate(stage_widths, start=1):
            setattr(self, f"L2pooling_l{i}", L2Pooling(width))
        self.model = ResNetStages(arch)
        self.width = sum(stage_widths)
        if self.width % nhead:
            raise ConfigError(f"TReS: {nhead} heads do not divide the {self.width} channels")
        self.transformer = Transformer(self.width, nhead, layers, ff, dropout)
        last = stage_widths[-1]
        self.fc2 = nn.Linear(self.width, last)
        self.fc = nn.Linear(2 * last, num_classes)
        self.softmax = nn.Softmax(dim=1)
        self.drop2d = nn.Dropout(p=0.1)
        self.backbone_prefix = "model."

    def features(self, x: torch.Tensor) -> torch.Tensor:
        stages = self.model(x)
        grid = stages[-1].shape[-2:]
        pooled = []
        for i, stage in enumerate(stages, start=1):
            mapped = self.drop2d(getattr(self, f"L2pooling_l{i}")(F.normalize(stage, dim=1, p=2)))
            factor = mapped.shape[-1] // grid[-1]
            pooled.append(F.avg_pool2d(mapped, factor) if factor > 1 else mapped)
        layers = torch.cat(pooled, dim=1)
        if layers.shape[-2:] != grid:
            raise ConfigError(f"TReS needs an input side that is a multiple of 32, got {tuple(x.shape[-2:])}")
        pos = sine_position_embedding(self.width, int(grid[0]), int(grid[1]), device=x.device).to(layers.dtype)
        encoded = self.transformer(layers, pos.expand(x.shape[0], -1, -1, -1))
        return torch.cat((self.fc2(encoded.mean(dim=(2, 3))), stages[-1].mean(dim=(2, 3))), dim=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        activation = self.features(x)
        return self.softmax(self.fc(activation)), activation
