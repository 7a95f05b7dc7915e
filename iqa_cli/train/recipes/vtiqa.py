"""VT-IQA training/evaluation protocol (methods spec §0, §1, §5), as defaults that are all flags.

Protocol (the authors' `training/training_example_of_koniq.py`): DeiT-S/16 from ImageNet weights,
head Dropout(0.5)-768-64-8-1, L1 loss on 1-5 labels, plain SGD (momentum 0, weight decay 1e-3),
batch 192; epochs 0-10 train the head only at lr 0.01, then everything at 0.001, 0.005 after
epoch 20, 0.03 after epoch 30; plateau: >20 epochs without improvement (after epoch 20) reloads the
best model and multiplies lr by 0.3; training stops when lr < 5e-5. Views: a 224 crop of the image
resized to 244 (one random offset and flip rule per batch, centre crop at test) and a 7x7 mosaic of
32 px patches from the image resized to 768 (per-batch random cell offsets, cell centres at test).
Each batch re-seeds torch with `len(loader) * epoch + batch`, so augmentation and dropout depend on
the position in training only.

Deviations, on purpose: the kept model is chosen on a validation part of the training split (the
authors used test PLCC; `--select-on test` restores that and says so in every output); the optimizer
is created once (identical for momentum 0: SGD then has no state); the plateau counter is set to 1
when the last LR phase starts, as the authors do at epoch 30.

`--variant original` (sensitivity-selected mosaic + SA-Fusion) is evaluation-only: the authors
released no training code for it, and its selection network's training is undocumented.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

from iqa_cli.errors import CheckpointError, ConfigError
from iqa_cli.train.config import protocol_default
from iqa_cli.train.recipes import register_recipe
from iqa_cli.train.recipes.base import Recipe, Views
from iqa_cli.train.recipes.esnthere import (
    EsnthereParams,
    check_protocol,
    esnthere_optimizer,
    esnthere_schedule,
    regression_loss,
)
from iqa_cli.train.schedule import PhasePlateau

# torch and the model zoo are imported inside the methods: the CLI builds its options from this module
# and should not pay for importing torch just to print --help.
if TYPE_CHECKING:
    import torch
    from torch import nn

    from iqa_cli.models.vtiqa_org import VTIQAOriginal

Variant = Literal["simplified", "original"]
Metric = Literal["srcc", "plcc", "plcc_logistic", "krcc"]
ORIGINAL_PARTS = ("backbone", "fusion", "selection")
DEFAULT_ORIGINAL_WEIGHTS = "vtiqa_org_koniq10k"  # the only original-variant release (KonIQ)
# Keys of a training batch whose crops `cut_train_views` already cut (uint8, network-input sized).
HOST_GLOBAL, HOST_MOSAIC = "global_crop", "mosaic_cut"
SCORE_GLOBAL, SCORE_MOSAIC = "global_centre", "test_mosaic"  # `scoring_views`: the test-time crops


@dataclass
class VTIQAParams(EsnthereParams):
    epochs: int = field(default=2000, metadata={"help": "epoch cap (the protocol stops when lr < min_lr)"})
    batch_size: int = field(default=192, metadata={"help": "training batch size (global over DDP ranks)"})
    eval_batch_size: int = field(default=64, metadata={"help": "evaluation batch size (per rank)"})
    selection_metric: Metric = field(
        default="plcc", metadata={"help": "metric that picks the kept model: srcc, plcc, plcc_logistic or krcc"}
    )
    variant: Variant = field(
        default="simplified",
        metadata={"help": "simplified (released model) or original (eval only: no training code was released)"},
    )
    global_source: int = protocol_default(
        EsnthereParams, "global_source", 244, help="side of the resize the global view is cropped from"
    )
    crop_size: int = protocol_default(
        EsnthereParams, "crop_size", 224, help="network input side (global crop and mosaic)"
    )
    mosaic_source: int = field(default=768, metadata={"help": "side of the resize the mosaic patches are cut from"})
    mosaic_grid: int = field(default=7, metadata={"help": "mosaic cells per side"})
    mosaic_patch: int = field(default=32, metadata={"help": "mosaic patch side (grid * patch = crop_size)"})
    patch_size: int = field(
        default=16,
        metadata={"help": "ViT token patch side (16 = DeiT-S/16, the only size its ImageNet weights fit)"},
    )


TINY = {
    "pretrained": None,
    "global_source": 72,
    "crop_size": 64,
    "mosaic_source": 128,
    "mosaic_grid": 4,
    "mosaic_patch": 16,
    "batch_size": 16,
    "eval_batch_size": 32,
}


def phases(params: VTIQAParams) -> tuple[tuple[int, float], ...]:
    return ((0, params.lr),) if params.lr is not None else params.lr_phases


@register_recipe
class VTIQARecipe(Recipe[VTIQAParams]):
    name = "vtiqa"
    title = "VT-IQA (Li et al., TCSVT 2022)"
    Params = VTIQAParams
    tiny_params = TINY
    reseed_per_batch = True
    channels_last_helps = False  # a ViT: only the patch-embedding convolution would see it

    def check_params(self, params: VTIQAParams) -> None:
        check_protocol(params)
        if params.mosaic_grid * params.mosaic_patch != params.crop_size:
            raise ConfigError(
                f"mosaic_grid * mosaic_patch ({params.mosaic_grid} * {params.mosaic_patch}) must equal crop_size "
                f"({params.crop_size}): both views go through the same ViT"
            )
        if params.crop_size % params.patch_size:
            raise ConfigError(f"crop_size ({params.crop_size}) must be a multiple of patch_size ({params.patch_size})")
        if params.patch_size != 16 and params.pretrained:
            raise ConfigError(
                f"the pretrained backbone '{params.pretrained}' has 16 px patches; with --patch-size "
                f"{params.patch_size} train from scratch (--pretrained none)"
            )
        if params.mosaic_source // params.mosaic_grid <= params.mosaic_patch:
            raise ConfigError(
                f"mosaic cells ({params.mosaic_source} // {params.mosaic_grid}) must be larger than the "
                f"{params.mosaic_patch} px patches"
            )

    def check_training(self, params: VTIQAParams) -> None:
        if params.variant == "original":
            raise ConfigError(
                "--variant original is evaluation-only: the authors released inference code and weights for it but "
                "no training code (the training of its selection network is undocumented); train --variant "
                "simplified, or evaluate the released original weights with `iqa eval vtiqa --variant original`"
            )

    def model_name(self, params: VTIQAParams) -> str:
        return "vtiqa-org" if params.variant == "original" else "vtiqa"

    def build_model(self, params: VTIQAParams, *, tiny: bool, pretrained: bool) -> nn.Module:
        from iqa_cli.models import create

        if params.variant == "original":
            return create(
                "vtiqa-org",
                tiny=tiny,
                img_size=params.crop_size,
                grid=params.mosaic_grid,
                patch=params.mosaic_patch,
            )
        backbone = None
        if pretrained and params.pretrained:
            from iqa_cli.weights.resolve import resolve_weights

            backbone = resolve_weights(params.pretrained)
        return create(
            "vtiqa",
            tiny=tiny,
            img_size=params.crop_size,
            patch_size=params.patch_size,
            dropout=params.dropout,
            backbone_weights=backbone,
        )

    def weight_files(self, weights: str, variant: str | None) -> dict[str, Path]:
        """The original variant is released as three files; a store name NAME finds NAME_backbone,
        NAME_fusion and NAME_selection (e.g. vtiqa_org_koniq10k)."""
        from iqa_cli.weights.resolve import resolve_weights
        from iqa_cli.weights.store import WeightStore

        if variant == "original" and not Path(weights).expanduser().exists():
            store = WeightStore()
            names = {part: f"{weights}_{part}" for part in ORIGINAL_PARTS}
            if all(store.has(name) for name in names.values()):
                return {part: store.path(name) for part, name in names.items()}
            missing = [name for name in names.values() if not store.has(name)]
            some_parts = len(missing) < len(names)
            if not store.has(weights) and (some_parts or weights == DEFAULT_ORIGINAL_WEIGHTS):
                # The release is three files: say which are not in the store and how to put them there,
                # not that a name no one typed (the default) is unknown.
                steps = "; ".join(
                    f"iqa weights import vtiqa-org-{name.rsplit('_', 1)[1]} FILE --name {name}" for name in missing
                )
                raise CheckpointError(
                    f"--variant original scores {weights}, released as three files, and {', '.join(missing)} "
                    f"{'is' if len(missing) == 1 else 'are'} not in the weights store {store.root} (the authors "
                    f"share them by hand: see `iqa weights list`); import them ({steps}), or pass --weights"
                )
        return {"model": resolve_weights(weights)}

    def default_weights(self, variant: str | None) -> str | None:
        return DEFAULT_ORIGINAL_WEIGHTS if variant == "original" else None

    def load_weights(self, model: nn.Module, files: Mapping[str, Path], params: VTIQAParams) -> None:
        from iqa_cli.models import load_checkpoint
        from iqa_cli.models.vtiqa_org import load_original_parts

        if "model" in files:
            load_checkpoint(model, files["model"])
        else:
            load_original_parts(cast("VTIQAOriginal", model), **{part: files[part] for part in ORIGINAL_PARTS})

    def eval_needs_grad(self, params: VTIQAParams) -> bool:
        return params.variant == "original"  # its mosaic comes from an input gradient

    # ------------------------------------------------------------------------------------ views

    def view_shapes(self, params: VTIQAParams) -> dict[str, tuple[int, ...]]:
        return {
            "global": (3, params.global_source, params.global_source),
            "mosaic": (3, params.mosaic_source, params.mosaic_source),
        }

    def stored_views(self, images: list[torch.Tensor], params: VTIQAParams) -> Views:
        from iqa_cli.train.augment import resize_square

        return {
            "global": resize_square(images, params.global_source),
            "mosaic": resize_square(images, params.mosaic_source),
        }

    def scoring_view_shapes(self, params: VTIQAParams) -> dict[str, tuple[int, ...]]:
        if params.variant == "original":  # its mosaic is selected from the whole 768 px image
            return self.view_shapes(params)
        side = params.crop_size
        return {SCORE_GLOBAL: (3, side, side), SCORE_MOSAIC: (3, side, side)}

    def scoring_views(self, images: list[torch.Tensor], params: VTIQAParams) -> Views:
        if params.variant == "original":
            return self.stored_views(images, params)
        import torch

        from iqa_cli.models.vtiqa_views import centre_offsets
        from iqa_cli.train.augment import resize_spans, same_size_batches

        # The centre crop of the 244 px resize and the test mosaic's patches, cut from the 768 px resize
        # in the order `mosaic_view` pastes them: the pixels `eval_inputs` takes from the full views,
        # with only the rows around them resized where that is exact (`resize_spans`).
        grid, patch, size, side = params.mosaic_grid, params.mosaic_patch, params.crop_size, params.mosaic_source
        cell, offset = side // grid, int(centre_offsets(side, grid, patch)[0])
        cells = [(i * cell + offset, i * cell + offset + patch) for i in range(grid)]
        centre = (params.global_source - size) // 2
        crop = [(centre, centre + size)]
        views = {name: torch.empty((len(images), *shape), dtype=torch.uint8, device=images[0].device)
                 for name, shape in self.scoring_view_shapes(params).items()}  # fmt: skip
        for positions, batch in same_size_batches(images):  # each size stacked once for both views
            views[SCORE_GLOBAL][positions] = resize_spans(batch, params.global_source, params.global_source, crop, crop)
            views[SCORE_MOSAIC][positions] = resize_spans(batch, side, side, cells, cells)
        return views

    def cut_train_views(self, views: Views, rows: torch.Tensor, seed: int, params: VTIQAParams) -> Views | None:
        if params.crop_mode != "batch":
            return None
        from iqa_cli.models.vtiqa_views import train_crops

        x_global, x_mosaic = train_crops(
            views["global"], views["mosaic"], seed, rows,
            size=params.crop_size, grid=params.mosaic_grid, patch=params.mosaic_patch,
        )  # fmt: skip
        return {HOST_GLOBAL: x_global, HOST_MOSAIC: x_mosaic}

    def train_inputs(self, views: Views, seed: int, params: VTIQAParams) -> tuple[torch.Tensor, ...]:
        from iqa_cli.models.imagenet import imagenet_normalize
        from iqa_cli.models.vtiqa_views import mosaic_view, train_mosaic_offsets, train_views
        from iqa_cli.train.augment import random_crop_flip

        if HOST_GLOBAL in views:  # already cut on the host by `cut_train_views`
            return imagenet_normalize(views[HOST_GLOBAL]), imagenet_normalize(views[HOST_MOSAIC])
        grid, patch, size = params.mosaic_grid, params.mosaic_patch, params.crop_size
        if params.crop_mode == "batch":
            return train_views(views["global"], views["mosaic"], seed, size=size, grid=grid, patch=patch)
        x_global = random_crop_flip(views["global"], size, seed)
        offsets = train_mosaic_offsets(seed, params.mosaic_source, grid, patch)
        x_mosaic = mosaic_view(views["mosaic"], offsets, grid, patch)
        return imagenet_normalize(x_global), imagenet_normalize(x_mosaic)

    def eval_inputs(self, views: Views, params: VTIQAParams) -> tuple[torch.Tensor, ...]:
        from iqa_cli.models.imagenet import imagenet_normalize
        from iqa_cli.models.vtiqa_views import eval_views

        if SCORE_GLOBAL in views:  # made by `scoring_views`: already the test crops
            return imagenet_normalize(views[SCORE_GLOBAL]), imagenet_normalize(views[SCORE_MOSAIC])
        grid, patch, size = params.mosaic_grid, params.mosaic_patch, params.crop_size
        if params.variant == "original":
            offset = (views["global"].shape[-1] - size) // 2
            x_global = views["global"][..., offset : offset + size, offset : offset + size]
            return imagenet_normalize(x_global), views["mosaic"]
        return eval_views(views["global"], views["mosaic"], size=size, grid=grid, patch=patch)

    # ------------------------------------------------------------------------------ optimisation

    def loss(self, pred: torch.Tensor, target: torch.Tensor, params: VTIQAParams) -> torch.Tensor:
        return regression_loss(params.loss, pred, target)

    def configure_epoch(self, model: nn.Module, epoch: int, params: VTIQAParams) -> None:
        model.requires_grad_(True)
        model.backbone.requires_grad_(epoch >= params.freeze_epochs)

    def make_optimizer(self, model: nn.Module, params: VTIQAParams) -> torch.optim.Optimizer:
        return esnthere_optimizer(model.parameters(), params, phases(params)[0][1])

    def make_schedule(self, params: VTIQAParams) -> PhasePlateau:
        return esnthere_schedule(phases(params), params)
