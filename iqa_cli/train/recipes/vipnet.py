"""VIPNet quality training and evaluation (methods spec A.4, A.5; the authors' `train.py` / `train.sh`).

Protocol: a frozen ImageNet ResNet-50 content branch (its 1x1 side convs train) and a frozen
distortion branch, the pre-trained DPM (`--dpm`: our `iqa train vipnet-dpm` best.safetensors, the
authors' `botnet_model_best.pth.tar`, or a weights-store name such as `vipnet_dpm` after `iqa weights
import vipnet-dpm FILE`), joined by the interaction transformer. Every training image is repeated
`train_patch_num` times per epoch (HyperIQA style; each repetition a fresh crop), each sample a
uniformly random 288x384 crop of the RGB image with the YCbCr view either the same crop (LIVE, CSIQ,
LIVEC, KonIQ) or the whole image resized to 288x384 (TID2013, KADID-10k; `--dpm-view auto` picks by
dataset as the authors' loaders do), both flipped together with p = 0.5. L1 loss on the scores; Adam
(lr 5e-4, weight decay 5e-4 as an L2 term, over the trainable parameters only); ExponentialLR(0.85)
per epoch; batch 32; 35 epochs; early stop once the epoch is past half of them, more than 10 epochs
after the best one, and not improving. Test time: `test_patch_num` random crops with random flips per
image, the predictions averaged per image. The kept model is the best SRCC.

Choices and deviations, on purpose:
- Frozen BatchNorm (`--bn-mode`): the authors call `model.train()` on the whole model, so the frozen
  branches' BatchNorm layers normalise with batch statistics and keep updating their running
  statistics while IQA training runs (evaluation then uses the drifted statistics). `train` (default)
  reproduces that; `eval` keeps the pre-trained statistics fixed. The two give different results.
- Patches: `train_patch_num` / `test_patch_num` default to `configs.py`'s 12; the authors' `train.sh`
  ran 16 and 16 (pass `--train-patch-num 16 --test-patch-num 16` to match it).
- Test crops are random as in the authors' code, but drawn from a generator seeded by `test_seed`
  and a hash of the image's pixels, so evaluation is deterministic and independent of batching,
  order and DDP sharding. `--test-flip/--no-test-flip` keeps or drops the authors' test-time flips.
- Labels are the raw scores, not rescaled (`label_scale = paper`); for lower-better datasets (LIVE
  and CSIQ DMOS) the network regresses -DMOS instead of DMOS: the same L1 problem up to sign, and
  predictions then always mean "higher = better", so cross-dataset correlations keep their sign
  where the authors take |SRCC| and |PLCC|. `--label-scale native` trains on DMOS as is; `range`
  maps every dataset onto 1-5. KonIQ: the authors' loader reads `MOS_zscore` (0-100), which the cache
  keeps beside the 1-5 MOS; on the paper scale VIPNet trains and tests on it (the two columns rank
  with SRCC 0.992, so a correlation against the MOS is not the authors').
- Image sizes: crops come from each image at its own resolution. `canvas` (H,W; 768x768 holds every
  VIPNet dataset unscaled) bounds it: a larger image is downscaled to fit (aspect kept). On KonIQ the
  default canvas is 384x512: the authors read the 512x384 release, so a cache of the 1024x768 release
  (`iqa prepare koniq`'s default) is halved to their scale (Pillow bicubic; the official half-size
  files were made by KonIQ's authors, so pixels differ slightly; prepare KonIQ from the 512x384
  release for theirs exactly); an image smaller than the crop in
  either side is upscaled (aspect kept) until the crop fits, where the authors' code fails. Rescaling
  uses Pillow's bicubic filter. The stored views are padded only to the dataset's largest kept image
  (KADID-10k: 384x512), which changes no crop.
- Multi-GPU: under `torchrun` each rank trains on its share of every epoch's patches; the frozen
  branches' BatchNorm statistics (bn_mode train) are rank 0's after every epoch (the engine
  broadcasts buffers), as DDP itself does at every forward.
- Selection: by default on a validation part carved from the training references; the authors
  selected the best epoch on the test part (`--select-on test` restores that), and computed the
  early stop from test SRCC too (here: from the selection part).
- The content branch starts from the weights store's `<cpm>_tv_in1k` (torchvision's current
  ImageNet weights, e.g. `resnet50-0676ba61.pth`); the authors' multi-scale branch used the older
  files (`resnet50-19c8e357.pth`, `resnet18-5c106cde.pth`, `resnet34-333f7ec4.pth`; add one with
  `iqa weights add NAME FILE` and pass `--cpm-weights NAME` to match). Their single-scale branch
  (`--no-multi-scale`) loads torchvision's current weights, as here.
- Per-distortion-type SRCC on TID2013/KADID-10k (the authors' `evaluate_distortion_type_performance`,
  at their best epoch): `iqa eval --by-type` gives SRCC and PLCC per type for the kept model; the
  training log does not.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from iqa_cli.errors import ConfigError
from iqa_cli.train.labels import LABEL_SCALES, ZSCORE_COLUMN, LabelMap, is_koniq
from iqa_cli.train.optim import fused_where_possible
from iqa_cli.train.recipes import register_recipe
from iqa_cli.train.recipes.base import BaseParams, Recipe, Views
from iqa_cli.train.schedule import EpochDecay

if TYPE_CHECKING:
    import torch
    from torch import nn

    from iqa_cli.models.vipnet import VIPNet
    from iqa_cli.train.data import DatasetLike, SplitParts

DpmView = Literal["auto", "crop", "resize"]
Cpm = Literal["resnet18", "resnet34", "resnet50"]  # configs.py --cpm (`iqa_cli.models.vipnet.CPM_ARCHS`; tested)
BnMode = Literal["train", "eval"]
log = logging.getLogger(__name__)
# Caches already warned about in this process (a run's splits and evaluations share one warning).
_WARNED_NO_ZSCORE: set[str] = set()

Metric = Literal["srcc", "plcc", "plcc_logistic", "krcc"]
# Datasets whose YCbCr view the authors' loaders build from the whole image (`img_crop=False`).
WHOLE_IMAGE_DATASETS = {"tid2013", "tid", "kadid10k", "kadid-10k", "kadid"}
# VIPNet's KonIQ loader reads the 512x384 release (`data_loader.py` `Koniq_10kFolder`): on KonIQ the default
# canvas keeps images at that size, so a cache of the 1024x768 release is cropped at the authors' scale.
DEFAULT_CANVAS = (768, 768)
KONIQ_CANVAS = (384, 512)
_HASH_STRIDE = 7  # pixels sampled for the per-image test-crop seed


@dataclass
class VIPNetParams(BaseParams):
    epochs: int = field(default=35, metadata={"help": "maximum number of epochs (configs.py / train.sh: 35)"})
    batch_size: int = field(default=32, metadata={"help": "training batch size in patches (global over DDP ranks)"})
    eval_batch_size: int = field(
        default=8, metadata={"help": "evaluation batch size in images, each test_patch_num crops (per rank)"}
    )
    selection_metric: Metric = field(
        default="srcc",
        metadata={"help": "metric that picks the kept model: srcc (protocol), plcc, plcc_logistic, krcc"},
    )
    label_scale: str = field(
        default="paper",
        metadata={
            "help": "paper (raw scores; -DMOS for lower-better sets), native (raw), range (declared range to 1-5)"
        },
    )
    dpm: str | None = field(
        default="vipnet_dpm",
        metadata={
            "help": "pre-trained DPM: an `iqa train vipnet-dpm` best.safetensors, the authors' "
            "botnet_model_best.pth.tar, a weights-store name, or none (random init)"
        },
    )
    cpm: Cpm = field(
        default="resnet50",
        metadata={"help": "content branch backbone (configs.py --cpm): resnet18, resnet34 or resnet50"},
    )
    multi_scale: bool = field(
        default=True,
        metadata={
            "help": "multi-scale content features (side convs on every stage, configs.py's default); off: the "
            "last stage's map alone"
        },
    )
    cpm_weights: str | None = field(
        default="imagenet",
        metadata={
            "help": "ImageNet start weights of the content backbone: imagenet (the store's <cpm>_tv_in1k), another "
            "file or store name, or none (random init)"
        },
    )
    freeze_cpm: bool = field(default=True, metadata={"help": "freeze the content backbone (its side convs train)"})
    freeze_dpm: bool = field(default=True, metadata={"help": "freeze the distortion branch"})
    bn_mode: BnMode = field(
        default="train",
        metadata={
            "help": "BatchNorm of the frozen branches while training: train (authors: batch statistics, running "
            "statistics drift) or eval (pre-trained statistics kept)"
        },
    )
    resolution: tuple[int, int] = field(default=(288, 384), metadata={"help": "crop H,W (the network's input size)"})
    canvas: tuple[int, int] = field(
        default=DEFAULT_CANVAS,
        metadata={
            "help": "largest H,W kept unscaled; larger images are downscaled to fit (crops come from them); "
            "on KonIQ the default is 384,512, the release the authors read (so for image files too, with a model "
            "trained on KonIQ)"
        },
    )
    dpm_view: DpmView = field(
        default="auto",
        metadata={
            "help": "YCbCr view: crop (same crop), resize (whole image resized), auto (resize on TID2013/KADID-10k, "
            "crop elsewhere, as the authors; image files: the training dataset's)"
        },
    )
    train_patch_num: int = field(default=12, metadata={"help": "crops per training image and epoch (train.sh: 16)"})
    test_patch_num: int = field(default=12, metadata={"help": "random crops averaged per test image (train.sh: 16)"})
    test_seed: int = field(default=0, metadata={"help": "seed of the test crops (with each image's pixel hash)"})
    flip: bool = field(default=True, metadata={"help": "random joint horizontal flip of training crops"})
    test_flip: bool = field(default=True, metadata={"help": "random horizontal flips of test crops (authors: on)"})
    lr: float = field(default=5e-4, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=5e-4, metadata={"help": "Adam weight decay (L2 term, not AdamW)"})
    lr_decay: float = field(default=0.85, metadata={"help": "ExponentialLR gamma per epoch"})
    patience: int | None = field(
        default=10,
        metadata={"help": "early stop after this many epochs without improvement, past half the epochs (none: off)"},
    )
    embed_dim: int = field(default=128, metadata={"help": "interaction transformer width"})
    depth: int = field(default=2, metadata={"help": "interaction transformer layers"})
    num_heads: int = field(default=16, metadata={"help": "interaction transformer heads (64 dims each)"})
    dropout: float = field(default=0.4, metadata={"help": "dropout in the interaction transformer"})


def cpm_source(params: VIPNetParams) -> str | None:
    """The content backbone's start weights: `imagenet` is the weights store's torchvision entry."""
    return f"{params.cpm}_tv_in1k" if params.cpm_weights == "imagenet" else params.cpm_weights


TINY = {
    "dpm": None,
    "cpm_weights": None,
    "resolution": (64, 96),
    "canvas": (96, 128),
    "batch_size": 8,
    "eval_batch_size": 8,
    "train_patch_num": 2,
    "test_patch_num": 2,
    "embed_dim": 16,
    "depth": 1,
    "num_heads": 2,
}


def encode_sizes(heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """(n,) heights and widths -> (n, 4) uint8 view [h // 256, h % 256, w // 256, w % 256]."""
    import torch

    return torch.stack([heights // 256, heights % 256, widths // 256, widths % 256], dim=1).to(torch.uint8)


def decode_sizes(view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (n, 4) uint8 size view -> (heights, widths) int64, on the view's device (no host copy: a
    training step reads no value back from the GPU)."""
    v = view.long()
    return v[:, 0] * 256 + v[:, 1], v[:, 2] * 256 + v[:, 3]


def fitted_sizes(
    heights: np.ndarray, widths: np.ndarray, canvas: tuple[int, int], crop: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The sizes h x w images are kept at: downscaled (aspect kept) to fit the canvas, upscaled (aspect
    kept) when a crop would not fit, clamped to [crop, canvas] per side (only extreme aspect ratios)."""
    h, w = np.asarray(heights, dtype=np.float64), np.asarray(widths, dtype=np.float64)
    scale = np.minimum(1.0, np.minimum(canvas[0] / h, canvas[1] / w))
    small = (h * scale < crop[0]) | (w * scale < crop[1])
    scale = np.where(small, np.maximum(crop[0] / h, crop[1] / w), scale)
    fh = np.clip(np.rint(h * scale), crop[0], canvas[0]).astype(np.int64)
    fw = np.clip(np.rint(w * scale), crop[1], canvas[1]).astype(np.int64)
    return fh, fw


def _pair(value: Any) -> tuple[int, int]:
    """An (H, W) option as a tuple of ints (TOML and JSON give lists)."""
    return int(value[0]), int(value[1])


def fitted_size(h: int, w: int, canvas: tuple[int, int], crop: tuple[int, int]) -> tuple[int, int]:
    """`fitted_sizes` of one image."""
    fh, fw = fitted_sizes(np.array([h]), np.array([w]), canvas, crop)
    return int(fh[0]), int(fw[0])


_M31 = 2**31 - 1


def _mix31(x: torch.Tensor) -> torch.Tensor:
    """An integer hash of int64 values in [0, 2^31): xor-shift/multiply rounds kept below 2^62, so the
    same on every device (no overflow)."""
    x = x & _M31
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _M31
    x = x ^ (x >> 12)
    x = (x * 0x297A2D39) & _M31
    return x ^ (x >> 15)


def pixel_hashes(images: torch.Tensor, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
    """(n,) int64 fingerprints in [0, 2^31) of each uint8 image's valid (h, w) region, on the images'
    device: every `_HASH_STRIDE`-th row and column, weighted by position, so the value does not depend
    on the canvas or the batch the image sits in. One batched computation, nothing read back."""
    import torch

    device = images.device
    sampled = images[:, :, ::_HASH_STRIDE, ::_HASH_STRIDE].long()
    c, ys, xs = sampled.shape[1:]
    rows = torch.arange(ys, device=device) * _HASH_STRIDE
    cols = torch.arange(xs, device=device) * _HASH_STRIDE
    channel = torch.arange(c, device=device)[:, None, None]
    weights = ((channel * 131 + rows[None, :, None]) * 40503 + cols[None, None, :] * 97 + 1) % 65521
    heights, widths = heights.to(device), widths.to(device)
    valid = (rows[None, :, None] < heights[:, None, None]) & (cols[None, None, :] < widths[:, None, None])
    total = (sampled * weights * valid[:, None]).sum(dim=(1, 2, 3))
    return _mix31(total % _M31 + heights * 65536 + widths)


def hashed_uniforms(seeds: torch.Tensor, count: int) -> torch.Tensor:
    """(n, count, 3) numbers in [0, 1) from per-image seeds (n,) int64: a counter-based generator, so
    image i's draws depend on its seed alone and are made on the seeds' device."""
    import torch

    counter = torch.arange(count * 3, device=seeds.device).view(1, count, 3)
    x = _mix31(_mix31(seeds[:, None, None] + counter * 0x9E3779B) + counter)
    return x.double().div(_M31 + 1).float()


def crop_plan(
    heights: torch.Tensor,
    widths: torch.Tensor,
    crop: tuple[int, int],
    count: int,
    flip: bool,
    *,
    generator: torch.Generator | None = None,
    seeds: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`count` uniformly random crop offsets (and flips) per image, all from `generator` (training), or,
    with `seeds` ((n,) int64), image i's from its own seed (`hashed_uniforms`, evaluation): (n * count,)
    tops, lefts and flips, image-major, on the device of `heights`."""
    import torch

    n, device = heights.shape[0], heights.device
    if seeds is not None:
        u = hashed_uniforms(seeds.to(device), count)
    else:  # drawn on the CPU from the batch's generator, then sent over without waiting for the GPU
        u = torch.rand((n, count, 3), generator=generator).to(device, non_blocking=True)
    tops = (u[..., 0] * (heights - crop[0] + 1)[:, None]).long()
    lefts = (u[..., 1] * (widths - crop[1] + 1)[:, None]).long()
    flips = u[..., 2] < 0.5 if flip else torch.zeros((n, count), dtype=torch.bool, device=device)
    return tops.reshape(-1), lefts.reshape(-1), flips.reshape(-1)


def _authors_choices(params: VIPNetParams, dataset: str) -> VIPNetParams:
    """The choices the authors' loaders make for `dataset` (a cache's `dataset` name): `dpm_view auto` ->
    the whole image on TID2013 and KADID-10k, else the crop; the default canvas -> 384x512 on KonIQ (the
    release they read)."""
    changes: dict[str, Any] = {}
    if params.dpm_view == "auto":
        changes["dpm_view"] = "resize" if dataset.lower() in WHOLE_IMAGE_DATASETS else "crop"
    if _pair(params.canvas) == DEFAULT_CANVAS and is_koniq({"dataset": dataset}):
        changes["canvas"] = KONIQ_CANVAS
    return dataclasses.replace(params, **changes)


@register_recipe
class VIPNetRecipe(Recipe[VIPNetParams]):
    name = "vipnet"
    title = "VIPNet (Wang et al., TMM 2023)"
    Params = VIPNetParams
    tiny_params = TINY
    # Off: `Module.to(channels_last)` refuses the DPM's 5-D relative-position parameters.
    channels_last_helps = False
    report_metrics = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")
    eval_params = ("test_patch_num", "test_seed", "test_flip", "dpm_view", "canvas")
    cross_skips_training_images = True  # LIVE Challenge is read without its first 7 rows (`data_loader.py`, `[7:]`)

    def check_params(self, params: VIPNetParams) -> None:
        if params.label_scale not in LABEL_SCALES:
            raise ConfigError(f"label_scale must be one of {', '.join(LABEL_SCALES)}, got '{params.label_scale}'")
        if len(params.resolution) != 2 or any(v < 32 or v % 32 for v in params.resolution):
            raise ConfigError(f"resolution must be two multiples of 32 (H,W), got {params.resolution}")
        if len(params.canvas) != 2 or any(c < r for c, r in zip(params.canvas, params.resolution, strict=True)):
            raise ConfigError(f"canvas {params.canvas} must be at least the crop size {params.resolution} (H,W)")
        if params.train_patch_num < 1 or params.test_patch_num < 1:
            raise ConfigError("train_patch_num and test_patch_num must be at least 1")
        if not params.lr > 0 or not 0 < params.lr_decay <= 1:
            raise ConfigError("lr must be positive and lr_decay in (0, 1]")
        if params.patience is not None and params.patience < 0:
            raise ConfigError(f"patience cannot be negative, got {params.patience}")

    def check_training(self, params: VIPNetParams) -> None:
        """Find (or fetch) the start weights before a run folder is made: a missing DPM fails here."""
        from iqa_cli.weights.resolve import resolve_weights

        for source in (params.dpm, cpm_source(params)):
            if source:
                resolve_weights(source)

    def pretraining_seen(self, params: VIPNetParams) -> tuple[np.ndarray, str] | None:
        """The references of the DPM's training images, where it records them (an `iqa train vipnet-dpm`
        model of a distorted set that keeps its references' digests; the authors' DPM records none)."""
        from iqa_cli.models.checkpoint import read_metadata
        from iqa_cli.train.data import read_seen_files
        from iqa_cli.weights.resolve import resolve_weights

        if not params.dpm:
            return None
        seen = read_seen_files(read_metadata(resolve_weights(params.dpm)))
        return None if seen is None else (seen, f"the DPM {params.dpm} (the references of its distorted images)")

    def model_name(self, params: VIPNetParams) -> str:
        return "vipnet"

    def build_model(self, params: VIPNetParams, *, tiny: bool, pretrained: bool) -> nn.Module:
        from iqa_cli.models import create
        from iqa_cli.weights.resolve import resolve_weights

        source = cpm_source(params) if pretrained else None
        cpm = resolve_weights(source) if source else None
        dpm = resolve_weights(params.dpm) if pretrained and params.dpm else None
        return create(
            "vipnet",
            tiny=tiny,
            resolution=tuple(params.resolution),
            cpm_arch=params.cpm,
            multi_scale=params.multi_scale,
            embed_dim=params.embed_dim,
            depth=params.depth,
            num_heads=params.num_heads,
            dropout=params.dropout,
            freeze_cpm=params.freeze_cpm,
            freeze_dpm=params.freeze_dpm,
            frozen_bn=params.bn_mode,
            cpm_weights=cpm,
            dpm_weights=dpm,
        )

    # ------------------------------------------------------------------------------------ data

    def dataset_params(self, params: VIPNetParams, dataset: DatasetLike) -> VIPNetParams:
        """`dpm_view auto` -> the authors' choice for this dataset; the default canvas -> 384x512 on KonIQ
        (the release the authors read); the canvas shrunk to the largest image kept (the same crops, less
        memory: KADID-10k's 512x384 images need a 384x512 canvas)."""
        params = _authors_choices(params, str(dataset.attrs.get("dataset", "")))
        sizes = np.asarray(dataset.sizes).reshape(-1, 2)
        if not sizes.size:
            return params
        fh, fw = fitted_sizes(sizes[:, 0], sizes[:, 1], _pair(params.canvas), _pair(params.resolution))
        return dataclasses.replace(params, canvas=(int(fh.max()), int(fw.max())))

    def file_params(self, params: VIPNetParams, meta: Mapping[str, str]) -> VIPNetParams:
        """Image files get the choices the model's training dataset made (`dataset_params`), so a photo of
        that dataset scores as in the model's tests: `dpm_view auto` is the training dataset's view (the
        whole image for TID2013 and KADID-10k), and a model trained on KonIQ with the default canvas saw its
        images at the 512x384 release's scale, so files are fitted to that canvas. `--dpm-view` and
        `--canvas` still choose others."""
        return _authors_choices(params, str(meta.get("dataset", "")))

    def label_map(self, attrs: Mapping[str, Any], params: VIPNetParams) -> LabelMap:
        if params.label_scale != "paper":
            return LABEL_SCALES[params.label_scale](attrs)
        if bool(attrs.get("lower_better", False)):
            return LabelMap(-1.0, 0.0, "-score (raw lower-better scores, negated so higher is better)")
        return LabelMap(1.0, 0.0, "raw scores (VIPNet trains on them unscaled)")

    def dataset_label_map(self, dataset: DatasetLike, params: VIPNetParams, source: str) -> LabelMap:
        """As every recipe, except KonIQ on the paper scale: the authors' loader reads `MOS_zscore`
        (`data_loader.py` `Koniq_10kFolder`), for training and for every test on KonIQ, so `iqa` does
        too where the cache keeps it. A cache without it gives the 1-5 MOS, with a warning."""
        label_map = self.label_map(dataset.attrs, params)
        if params.label_scale != "paper":
            return label_map
        if getattr(dataset, ZSCORE_COLUMN, None) is not None:
            return LabelMap(1.0, 0.0, "KonIQ MOS_zscore (0-100), VIPNet's KonIQ label", column=ZSCORE_COLUMN)
        if is_koniq(dataset.attrs) and source not in _WARNED_NO_ZSCORE:
            _WARNED_NO_ZSCORE.add(source)
            log.warning(
                f"{source}: this KonIQ cache keeps no MOS_zscore (prepared before iqa kept it): VIPNet's "
                "labels are the 1-5 MOS here, not the authors' MOS_zscore (they rank with SRCC 0.992, so the "
                "correlations differ from theirs); `iqa prepare koniq` again to get it"
            )
        return label_map

    # ------------------------------------------------------------------------------------ views

    def view_shapes(self, params: VIPNetParams) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {"rgb": (3, *params.canvas), "size": (4,)}
        if params.dpm_view == "resize":
            shapes["ycbcr_whole"] = (3, *params.resolution)
        return shapes

    def stored_views(self, images: list[torch.Tensor], params: VIPNetParams) -> Views:
        import torch

        from iqa_cli.models.vipnet import rgb_to_ycbcr
        from iqa_cli.train.augment import resize_to

        canvas, crop = _pair(params.canvas), _pair(params.resolution)
        device = images[0].device
        rgb = torch.zeros((len(images), 3, *canvas), dtype=torch.uint8, device=device)
        heights, widths = torch.empty(len(images), dtype=torch.int64), torch.empty(len(images), dtype=torch.int64)
        for i, image in enumerate(images):
            h, w = fitted_size(int(image.shape[-2]), int(image.shape[-1]), canvas, crop)
            rgb[i, :, :h, :w] = resize_to(image[None], h, w, pil="bicubic")[0]
            heights[i], widths[i] = h, w
        views = {"rgb": rgb, "size": encode_sizes(heights, widths).to(device)}
        if params.dpm_view == "resize":
            # The authors' PIL order: convert('YCbCr') on the whole image, then resize([W, H]) (bicubic).
            whole = [resize_to(rgb_to_ycbcr(x)[None], *crop, pil="bicubic")[0] for x in images]
            views["ycbcr_whole"] = torch.stack(whole)
        return views

    def _inputs(
        self,
        views: Views,
        tops: torch.Tensor,
        lefts: torch.Tensor,
        flips: torch.Tensor,
        count: int,
        params: VIPNetParams,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        from iqa_cli.models.vipnet import normalize_rgb, normalize_ycbcr, rgb_to_ycbcr
        from iqa_cli.train.augment import crop_flip_at

        rgb = views["rgb"]
        source = torch.arange(rgb.shape[0], device=rgb.device).repeat_interleave(count)
        crops = crop_flip_at(rgb, tops, lefts, flips, *params.resolution, source=source)
        if params.dpm_view == "resize":
            whole = views["ycbcr_whole"].index_select(0, source.to(rgb.device))
            ycbcr = torch.where(flips.to(rgb.device)[:, None, None, None], whole.flip(-1), whole)
        else:  # 'crop' (and an unresolved 'auto' outside a dataset, e.g. `iqa predict`)
            ycbcr = rgb_to_ycbcr(crops)
        return normalize_rgb(crops), normalize_ycbcr(ycbcr)

    def train_inputs(self, views: Views, seed: int, params: VIPNetParams) -> tuple[torch.Tensor, ...]:
        import torch

        heights, widths = decode_sizes(views["size"])
        generator = torch.Generator().manual_seed(seed)
        plan = crop_plan(heights, widths, params.resolution, 1, params.flip, generator=generator)
        return self._inputs(views, *plan, 1, params)

    def eval_inputs(self, views: Views, params: VIPNetParams) -> tuple[torch.Tensor, ...]:
        """(B, P, 3, H, W) RGB and YCbCr crops: P = test_patch_num random crops per image, their
        positions drawn, on the device, from a counter-based generator seeded by test_seed and the image's
        pixel hash (no value is read back to the host)."""

        heights, widths = decode_sizes(views["size"])
        count = params.test_patch_num
        seeds = _mix31(pixel_hashes(views["rgb"], heights, widths) + params.test_seed * 0x5BD1E995)
        plan = crop_plan(heights, widths, params.resolution, count, params.test_flip, seeds=seeds)
        rgb, ycbcr = self._inputs(views, *plan, count, params)
        return rgb.reshape(-1, count, *rgb.shape[1:]), ycbcr.reshape(-1, count, *ycbcr.shape[1:])

    def predict(self, model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Scores (B,): the mean over each image's crops when the inputs are (B, P, 3, H, W)."""
        rgb, ycbcr = inputs
        if rgb.dim() == 4:
            return model(rgb, ycbcr).reshape(-1)
        b, p = rgb.shape[:2]
        return model(rgb.flatten(0, 1), ycbcr.flatten(0, 1)).float().view(b, p).mean(dim=1)

    # ------------------------------------------------------------------------------ optimisation

    def train_pool(self, parts: SplitParts, params: VIPNetParams) -> np.ndarray:
        return np.repeat(np.asarray(parts.train, dtype=np.int64), params.train_patch_num)

    def loss(self, pred: torch.Tensor, target: torch.Tensor, params: VIPNetParams) -> torch.Tensor:
        import torch.nn.functional as F

        return F.l1_loss(pred.reshape(-1).float(), target)

    def configure_epoch(self, model: nn.Module, epoch: int, params: VIPNetParams) -> None:
        # Keep the branches frozen (the default would unfreeze everything).
        cast("VIPNet", model).freeze_branches(cpm=params.freeze_cpm, dpm=params.freeze_dpm, bn_mode=params.bn_mode)

    def make_optimizer(self, model: nn.Module, params: VIPNetParams) -> torch.optim.Optimizer:
        import torch

        trainable, fused = fused_where_possible(p for p in model.parameters() if p.requires_grad)
        return torch.optim.Adam(trainable, lr=params.lr, weight_decay=params.weight_decay, **fused)

    def make_schedule(self, params: VIPNetParams) -> EpochDecay:
        # The authors stop when epoch > best + 10, SRCC is below the best and epoch > int(epochs / 2)
        # (1-based epochs): here, more than `patience` epochs without improvement (checked at evaluations)
        # from epoch epochs // 2.
        return EpochDecay(
            params.lr,
            "exponential",
            gamma=params.lr_decay,
            stop_after=params.patience,
            stop_from_epoch=params.epochs // 2,
        )
