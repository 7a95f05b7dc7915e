"""Inception-ResNet-v2 (Szegedy et al., AAAI 2017) in the layout of Cadene's `pretrainedmodels` port.

SSL-IQA's InceptionResNetV2 teacher takes this network's children, so the module names here are the
port's (`conv2d_1a`, `mixed_5b`, `repeat`, ...) and its ImageNet file (`inceptionresnetv2-520b38e4.pth`)
loads by name. Two details of that port matter for fidelity and differ from timm's version: every
BatchNorm has eps 1e-3, and the average pool of `mixed_5b` does not count the padding.

`width_div` divides every channel count and `repeats` sets the three block counts (10, 20, 9): both
exist for CPU tests only; the defaults are the published network.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from iqa_cli.errors import ConfigError

BN_EPS = 1e-3  # the TensorFlow value the port keeps
BLOCK_SCALES = (0.17, 0.10, 0.20)  # residual scales of the 35x35, 17x17 and 8x8 blocks
BLOCK_REPEATS = (10, 20, 9)


class ConvBN(nn.Module):
    """conv (no bias) -> BatchNorm (eps 1e-3) -> ReLU; keys `conv.*` and `bn.*`."""

    def __init__(
        self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, padding: int | tuple[int, int] = 0
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Branches(nn.Module):
    """Parallel branches `branch0`, `branch1`, ... concatenated over channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for name, branch in self.named_children() if name.startswith("branch")], 1)


class Mixed5b(Branches):
    def __init__(self, w: int) -> None:
        super().__init__()
        self.branch0 = ConvBN(192 // w, 96 // w, 1)
        self.branch1 = nn.Sequential(ConvBN(192 // w, 48 // w, 1), ConvBN(48 // w, 64 // w, 5, padding=2))
        self.branch2 = nn.Sequential(
            ConvBN(192 // w, 64 // w, 1), ConvBN(64 // w, 96 // w, 3, padding=1), ConvBN(96 // w, 96 // w, 3, padding=1)
        )
        self.branch3 = nn.Sequential(
            nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), ConvBN(192 // w, 64 // w, 1)
        )


class Mixed6a(Branches):
    def __init__(self, w: int) -> None:
        super().__init__()
        self.branch0 = ConvBN(320 // w, 384 // w, 3, stride=2)
        self.branch1 = nn.Sequential(
            ConvBN(320 // w, 256 // w, 1),
            ConvBN(256 // w, 256 // w, 3, padding=1),
            ConvBN(256 // w, 384 // w, 3, stride=2),
        )
        self.branch2 = nn.MaxPool2d(3, stride=2)


class Mixed7a(Branches):
    def __init__(self, w: int) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(ConvBN(1088 // w, 256 // w, 1), ConvBN(256 // w, 384 // w, 3, stride=2))
        self.branch1 = nn.Sequential(ConvBN(1088 // w, 256 // w, 1), ConvBN(256 // w, 288 // w, 3, stride=2))
        self.branch2 = nn.Sequential(
            ConvBN(1088 // w, 256 // w, 1),
            ConvBN(256 // w, 288 // w, 3, padding=1),
            ConvBN(288 // w, 320 // w, 3, stride=2),
        )
        self.branch3 = nn.MaxPool2d(3, stride=2)


class ResidualBlock(Branches):
    """Branches -> 1x1 conv with bias back to the input width -> x + scale * out -> ReLU (unless last)."""

    scale: float

    def add_merge(self, width: int, branch_out: int, scale: float, relu: bool = True) -> None:
        """Called after the branches are set, so the state dict lists them first, as the port does."""
        self.scale = scale
        self.conv2d = nn.Conv2d(branch_out, width, 1)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.scale * self.conv2d(super().forward(x)))


class Block35(ResidualBlock):
    def __init__(self, w: int, scale: float) -> None:
        super().__init__()
        self.branch0 = ConvBN(320 // w, 32 // w, 1)
        self.branch1 = nn.Sequential(ConvBN(320 // w, 32 // w, 1), ConvBN(32 // w, 32 // w, 3, padding=1))
        self.branch2 = nn.Sequential(
            ConvBN(320 // w, 32 // w, 1), ConvBN(32 // w, 48 // w, 3, padding=1), ConvBN(48 // w, 64 // w, 3, padding=1)
        )
        self.add_merge(320 // w, 128 // w, scale)


class Block17(ResidualBlock):
    def __init__(self, w: int, scale: float) -> None:
        super().__init__()
        self.branch0 = ConvBN(1088 // w, 192 // w, 1)
        self.branch1 = nn.Sequential(
            ConvBN(1088 // w, 128 // w, 1),
            ConvBN(128 // w, 160 // w, (1, 7), padding=(0, 3)),
            ConvBN(160 // w, 192 // w, (7, 1), padding=(3, 0)),
        )
        self.add_merge(1088 // w, 384 // w, scale)


class Block8(ResidualBlock):
    def __init__(self, w: int, scale: float, relu: bool = True) -> None:
        super().__init__()
        self.branch0 = ConvBN(2080 // w, 192 // w, 1)
        self.branch1 = nn.Sequential(
            ConvBN(2080 // w, 192 // w, 1),
            ConvBN(192 // w, 224 // w, (1, 3), padding=(0, 1)),
            ConvBN(224 // w, 256 // w, (3, 1), padding=(1, 0)),
        )
        self.add_merge(2080 // w, 448 // w, scale, relu)


class InceptionResNetV2(nn.Module):
    """The trunk in the port's child order, ending with `avgpool_1a` and `last_linear` (1001 classes in
    the ImageNet file: class 0 is 'background')."""

    feature_dim: int

    def __init__(self, num_classes: int = 1001, *, width_div: int = 1, repeats: Sequence[int] = BLOCK_REPEATS) -> None:
        super().__init__()
        w = int(width_div)
        if w < 1 or any(c % w for c in (48, 80, 160, 224, 288, 1088, 2080, 1536)):
            raise ConfigError(
                f"InceptionResNetV2 width_div must divide every channel count (1, 2, 4, 8 or 16), got {w}"
            )
        if len(repeats) != 3 or min(repeats) < 1:
            raise ConfigError(f"InceptionResNetV2 repeats needs three counts >= 1, got {list(repeats)}")
        self.conv2d_1a = ConvBN(3, 32 // w, 3, stride=2)
        self.conv2d_2a = ConvBN(32 // w, 32 // w, 3)
        self.conv2d_2b = ConvBN(32 // w, 64 // w, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = ConvBN(64 // w, 80 // w, 1)
        self.conv2d_4a = ConvBN(80 // w, 192 // w, 3)
        self.maxpool_5a = nn.MaxPool2d(3, stride=2)
        self.mixed_5b = Mixed5b(w)
        self.repeat = nn.Sequential(*[Block35(w, BLOCK_SCALES[0]) for _ in range(repeats[0])])
        self.mixed_6a = Mixed6a(w)
        self.repeat_1 = nn.Sequential(*[Block17(w, BLOCK_SCALES[1]) for _ in range(repeats[1])])
        self.mixed_7a = Mixed7a(w)
        self.repeat_2 = nn.Sequential(*[Block8(w, BLOCK_SCALES[2]) for _ in range(repeats[2])])
        self.block8 = Block8(w, 1.0, relu=False)
        self.conv2d_7b = ConvBN(2080 // w, 1536 // w, 1)
        self.feature_dim = 1536 // w
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)  # the port's AvgPool2d(8) at its 299 px input
        self.last_linear = nn.Linear(self.feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name, child in self.named_children():
            if name == "last_linear":
                x = torch.flatten(x, 1)
            x = child(x)
        return x
