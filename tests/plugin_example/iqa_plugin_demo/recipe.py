"""The method `plugin-iqa`: images resized to 64 x 64, a random flip for training, L1 loss, Adam."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from iqa_cli.train.augment import resize_each
from iqa_cli.train.recipes import BaseParams, Recipe, register_recipe
from iqa_cli.train.schedule import EpochDecay


@dataclass
class PluginParams(BaseParams):
    epochs: int = field(default=5, metadata={"help": "epochs"})
    batch_size: int = field(default=8, metadata={"help": "training batch size"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate"})
    side: int = field(default=64, metadata={"help": "images are resized to side x side"})


@register_recipe
class PluginRecipe(Recipe[PluginParams]):
    name = "plugin-iqa"
    title = "Plugin IQA (an example of a third-party method)"
    Params = PluginParams

    def model_name(self, params):
        return "plugin-cnn"

    def build_model(self, params, *, tiny, pretrained):
        from iqa_cli.models import create

        return create("plugin-cnn")

    def view_shapes(self, params):
        return {"image": (3, params.side, params.side)}

    def stored_views(self, images, params):
        return {"image": resize_each(images, params.side, params.side)}

    def train_inputs(self, views, seed, params):
        x = views["image"].float() / 255
        flip = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(seed)) < 0.5
        return (torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x),)

    def eval_inputs(self, views, params):
        return (views["image"].float() / 255,)

    def loss(self, pred, target, params):
        return F.l1_loss(pred, target)

    def make_optimizer(self, model, params):
        return torch.optim.Adam(model.parameters(), lr=params.lr)

    def make_schedule(self, params):
        return EpochDecay(params.lr, "constant")
