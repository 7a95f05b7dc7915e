"""A tiny CNN quality regressor, registered as the network `plugin-cnn`."""

from __future__ import annotations

import torch
from torch import nn

from iqa_cli.models import register_model


class TinyIQANet(nn.Module):
    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, stride=2, padding=1)
        )
        self.head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3))).squeeze(-1)


@register_model("plugin-cnn", description="a tiny CNN (plugin example)", inputs="(B,3,64,64) in [0, 1]")
def build_plugin_cnn(**config) -> TinyIQANet:
    return TinyIQANet(**config)
