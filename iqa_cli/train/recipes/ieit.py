"""IEIT training/evaluation protocol (methods spec §0, §2, §5): two stages, every choice a flag.

Data: each image I comes with its intermediary E (`iqa prepare enhance`: `<cache>.enhanced.h5`),
replaced by I where the stored selection rule did not keep it (an ImageNet DeiT-S's max softmax on E
below that on I; `--no-select-enhanced` turns it off). Both go through the same views: the 244 px
resize, one random 224 crop and flip per batch shared by I and E (and, in stage 2, by the low-quality
pair), the centre crop at test time; ImageNet normalisation; each batch re-seeds torch with
`len(loader) * epoch + batch`.

Stage 1 (`--stage 1`, the authors' `example_of_first_training_stage_on_livew.py`): both DeiT-S
encoders from ImageNet weights; loss MSE(s1, y) + MSE(s2, y) with s1 = regressor 1 on
[enc1(I), enc2(I), enc2(E)] and s2 = regressor 2 on [enc2(I), enc2(E)]; epochs 0-20 train the
regressors only at lr 0.01, then everything at 0.001, 0.005 after epoch 40, 0.03 after epoch 60
(count set to 1); plateau: > 20 epochs without improvement after epoch 60 reloads the best model and
multiplies lr by 0.3; stop when lr < 5e-5; SGD (momentum 0, weight decay 1e-3), batch 146; kept model:
best PLCC of s1.

Stage 2 (`--stage 2`, `example_of_second_training_stage_on_livew.py`): starts from the stage-1 kept
model of the same dataset and split (found by itself, or `--from RUN`); encoder 1 frozen; each
training item brings a low-quality partner (I_p, E_p, y_p) = item `position % n_poor` of the split's
training images with y < 2 (1-5 scale), where `position` is the item's place in the training part;
enc1(I), enc2(I), enc2(E) are computed without gradients, so regressor 1 trains on frozen features
and encoder 2 learns only through regressor 2 on the pair: loss L1(s1, y) + L1(s2(I_p, E_p), y_p);
lr 0.001, 0.003 after epoch 20, 0.01 after epoch 40 (count 1); same plateau and stop rules; batch 210;
kept model: best PLCC(s1) + low-quality PLCC(s1). Inference (both stages): s1 only.

Options left at `none` take the stage's protocol value: batch size (146 / 210), lr phases, loss (mse /
l1), selection metric (plcc / plcc+lq_plcc). Metrics add `lq_n`, `lq_srcc`, `lq_plcc` (images with
label < `lq_threshold`: 2 on the 1-5 scale, as the authors' logs and test scripts report them, and 2.4
on CID2013, whose (Y+10)/25+1 mapping shifts labels by 0.4, as their `test_example_of_cid.py` does) and
`plcc+lq_plcc`.

Deviations, on purpose:
* The kept model is chosen on a validation part of the training split (the authors used the test
  part; `--select-on test` restores that and says so in every output). When the evaluated part holds
  fewer than 3 low-quality images, `lq_*` are NaN and `plcc+lq_plcc` is PLCC alone (the same set is
  evaluated every epoch, so the choice stays consistent).
* E comes from our built-in classical enhancement (the authors' is unpublished; see
  `iqa_cli.enhance.ops`) or from any tool via `iqa prepare enhance --enhanced-root`. The selection
  rule's probabilities are computed once per image and stored (the authors shipped them as files).
  `iqa predict` enhances and selects on the fly with the built-in method and `--classifier`.
* Splits default to the cache's seeded random splits (`--split ieit_chain_K` replays the authors'
  chained reshuffles on their image order; see docs/protocols.md). Parts are index-sorted, so the
  low-quality pairing `position % n_poor` runs over the training part in index order rather than the
  authors' shuffled order: the same rule.
* The optimizer is created once (identical for momentum 0: SGD then has no state). The global batch
  is split over DDP ranks (the authors' BalancedDataParallel put 32 or 42 on GPU 0 of 4).
* The encoders' ImageNet heads are kept (they are in the authors' checkpoints) but frozen: they take
  no part in the forward pass, so they never received gradients there either.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from iqa_cli.enhance import DEFAULT_CLASSIFIER
from iqa_cli.errors import CheckpointError, ConfigError, DataError
from iqa_cli.train.config import protocol_default
from iqa_cli.train.labels import LOW_QUALITY_DEFAULT, low_quality_threshold
from iqa_cli.train.metrics import METRIC_NAMES, compute_metrics, pearson, spearman
from iqa_cli.train.recipes import register_recipe
from iqa_cli.train.recipes.base import BaseParams, Recipe, TrainBatch, Views
from iqa_cli.train.recipes.esnthere import (
    EsnthereParams,
    Loss,
    Phases,
    check_min_lr,
    check_protocol,
    esnthere_optimizer,
    esnthere_schedule,
    regression_loss,
)
from iqa_cli.train.schedule import PhasePlateau

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import torch
    from torch import nn

    from iqa_cli.models.ieit import IEIT
    from iqa_cli.train.data import DatasetLike, SplitParts
    from iqa_cli.train.engine import FitContext, FitResult

STAGES = (1, 2)
STAGE_PHASES = {
    1: ((0, 0.01), (21, 0.001), (41, 0.005), (61, 0.03)),
    2: ((0, 0.001), (21, 0.003), (41, 0.01)),
}
STAGE_BATCH = {1: 146, 2: 210}
STAGE_LOSS: dict[int, Loss] = {1: "mse", 2: "l1"}
LQ_METRIC: Literal["plcc+lq_plcc"] = "plcc+lq_plcc"
STAGE_SELECTION: dict[int, SelectionMetric] = {1: "plcc", 2: LQ_METRIC}
SelectionMetric = Literal["srcc", "plcc", "plcc_logistic", "krcc", "lq_srcc", "lq_plcc", "plcc+lq_plcc"]
LQ_MIN = 3  # fewer low-quality images than this: no low-quality correlations
STAGE1_KEY = "stage1_weights"  # in the checkpoint metadata of stage-2 runs
# The digest of the stage-1 model's tensors beside its path: the path may hold another model later (stage 1
# trained on with `--resume --epochs`, or again), and the record must still say which one stage 2 began from.
STAGE1_DIGEST_KEY = "stage1_weights_sha256"


def _phase_text(phases: tuple[tuple[int, float], ...]) -> str:
    return ",".join(f"{e}:{lr:g}" for e, lr in phases)


@dataclass
class IEITParams(EsnthereParams):
    epochs: int = field(default=2000, metadata={"help": "epoch cap (the protocol stops when lr < min_lr)"})
    # None-able where the value depends on the stage: `stage_params` fills in the stage's.
    batch_size: int | None = field(  # type: ignore[assignment]
        default=None,
        metadata={"help": "training batch size, global over DDP ranks; none: the stage's (146 stage 1, 210 stage 2)"},
    )
    eval_batch_size: int = field(default=128, metadata={"help": "evaluation batch size (per rank)"})
    selection_metric: SelectionMetric | None = field(  # type: ignore[assignment]
        default=None,
        metadata={"help": f"metric that picks the kept model; none: plcc (stage 1), {LQ_METRIC} (stage 2)"},
    )
    stage: int = field(default=1, metadata={"help": "1 (both branches) or 2 (low-quality branch, from stage 1)"})
    label_scale: str = protocol_default(
        BaseParams,
        "label_scale",
        "paper",
        help="training label scale: paper (the method's mapping) or range (declared range to 1-5); not native, "
        "since the low-quality bar reads labels on 1-5",
    )
    from_run: str | None = field(
        default=None,
        metadata={
            "help": "stage 2: the stage-1 run (folder, name or checkpoint) to start from; default: the newest "
            "finished stage-1 run on the same dataset and split",
            "aliases": ("--from",),
        },
    )
    pretrained: str | None = protocol_default(
        EsnthereParams,
        "pretrained",
        "deit_small_patch16_224",
        help="stage 1 encoders' start weights: a weights-store name or file, or none for random init",
    )
    select_enhanced: bool = field(
        default=True,
        metadata={"help": "use E only where the stored selection rule keeps it (classifier confidence not lower)"},
    )
    classifier: str = field(
        default=DEFAULT_CLASSIFIER,
        metadata={"help": "ImageNet classifier of the selection rule for images enhanced on the fly (iqa predict)"},
    )
    lq_threshold: float | None = field(
        default=None,
        metadata={
            "help": "low-quality images: label below this (training label scale, 1-5); none: the dataset's "
            "(2, CID2013 2.4 as the authors' test script)"
        },
    )
    lr_phases: Phases | None = field(  # type: ignore[assignment]
        default=None,
        metadata={
            "help": f"learning rate by first epoch; none: the stage's ({_phase_text(STAGE_PHASES[1])} stage 1, "
            f"{_phase_text(STAGE_PHASES[2])} stage 2)"
        },
    )
    freeze_epochs: int = protocol_default(
        EsnthereParams, "freeze_epochs", 21, help="stage 1: epochs at the start that train the heads only"
    )
    plateau_after: int = protocol_default(EsnthereParams, "plateau_after", 60)
    loss: Loss | None = field(  # type: ignore[assignment]
        default=None, metadata={"help": "l1, mse or smooth_l1 for both terms; none: mse (stage 1), l1 (stage 2)"}
    )
    dropout: float = protocol_default(EsnthereParams, "dropout", 0.5, help="dropout before both regressors")


TINY = {
    "pretrained": None,
    "global_source": 72,
    "crop_size": 64,
    "batch_size": 16,
    "eval_batch_size": 32,
}


ENHANCED_KEY = "enhanced_images"  # checkpoint metadata: the digest of the E a model trained with
ENHANCEMENT_KEY = "enhancement"  # checkpoint metadata: how that E was made ("builtin: ...", "external: DIR", ...)
STAGE_FILLED = ("batch_size", "selection_metric", "lr_phases", "loss")  # `none` means "the stage's value"


def stage_params(params: IEITParams) -> IEITParams:
    """`params` with every `none` filled in by its stage's protocol value."""
    stage = params.stage
    return dataclasses.replace(
        params,
        batch_size=params.batch_size if params.batch_size is not None else STAGE_BATCH[stage],
        selection_metric=params.selection_metric or STAGE_SELECTION[stage],
        lr_phases=params.lr_phases if params.lr_phases is not None else STAGE_PHASES[stage],
        loss=params.loss or STAGE_LOSS[stage],
    )


def phases(params: IEITParams) -> tuple[tuple[int, float], ...]:
    if params.lr is not None:
        return ((0, params.lr),)
    return params.lr_phases if params.lr_phases is not None else STAGE_PHASES[params.stage]


def lq_bar(params: IEITParams) -> float:
    """The low-quality bar in use (the default where no dataset resolved it)."""
    return LOW_QUALITY_DEFAULT if params.lq_threshold is None else float(params.lq_threshold)


def low_quality_metrics(pred: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float | int]:
    """Correlations on the images labelled below `threshold` (NaN when fewer than LQ_MIN)."""
    pred, labels = np.asarray(pred, np.float64), np.asarray(labels, np.float64)
    low = labels < threshold
    n = int(low.sum())
    if n < LQ_MIN:
        return {"lq_n": n, "lq_srcc": math.nan, "lq_plcc": math.nan}
    return {"lq_n": n, "lq_srcc": spearman(pred[low], labels[low]), "lq_plcc": pearson(pred[low], labels[low])}


def low_quality_partners(train: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Partner of every training image, in the order of `train`: the training images labelled below
    `threshold`, taken as `position % n_poor` (the authors' `index % len(poor)`)."""
    train = np.asarray(train, dtype=np.int64)
    poor = train[np.asarray(labels)[train] < threshold]
    if poor.size == 0:
        raise ConfigError(
            f"stage 2 needs low-quality training images (label < {threshold:g}) and this split's training part has "
            "none (raise the bar with --lq-threshold: images labelled below it are the low-quality ones)"
        )
    return poor[np.arange(train.size) % poor.size]


def _check_same_enhanced(start: Path, now: str | None) -> None:
    """Stage 2 goes on from a stage-1 model: both stages must see the same enhanced images."""
    from iqa_cli.models.checkpoint import read_metadata
    from iqa_cli.train.choices import changed_inputs

    if now is not None and changed_inputs(read_metadata(start), {ENHANCED_KEY: now}):
        raise ConfigError(
            f"stage 2 would start from {start}, trained with other enhanced images than the cache has beside it now "
            "(made again since): make them as stage 1 trained, or train stage 1 again"
        )


def _trained_enhancement(meta: Mapping[str, str]) -> str | None:
    """How the E a model trained with was made: recorded by training, or the authors' for an imported
    release (their unpublished tool); None when not known (checkpoints older than the record)."""
    made = meta.get(ENHANCEMENT_KEY)
    if made:
        return str(made)
    if meta.get("source_sha256"):  # `iqa weights import`: the authors' checkpoint, trained on their E
        return "authors: their published enhanced images"
    return None


def _same_enhancement(a: str, b: str) -> bool:
    """Whether two `enhancement` records are one way of making E: the same kind (builtin, external,
    authors), and for the built-in one the same settings."""
    kind_a, kind_b = a.split(":", 1)[0].strip(), b.split(":", 1)[0].strip()
    return kind_a == kind_b and (kind_a != "builtin" or a == b)


def _check_same_split(start: Path, meta: Mapping[str, Any], split: str) -> None:
    """Stage 2 on a split goes on from a stage-1 model of that same split: one trained on another split
    of this dataset (`--from` another split's file, or a run on a cache prepared again with other splits)
    has trained on images of this split's test part, and stage 2's test figures would include them."""
    from iqa_cli.models.checkpoint import read_metadata

    recorded = read_metadata(start)
    same_dataset = recorded.get("dataset") == meta.get("dataset") or (
        bool(recorded.get("images_digest")) and recorded.get("images_digest") == meta.get("images_digest")
    )
    if not same_dataset:
        return  # trained on other images: nothing of this split's test part seen
    trained_split, trained_digest = recorded.get("split"), recorded.get("split_digest")
    if not trained_split or not trained_digest:
        log.warning(
            f"{start} does not record which split of {meta.get('dataset')} it trained on: stage 2's test figures "
            f"are unseen-data figures only if it did not train on the test part of split {split}"
        )
        return
    if trained_split != split:
        raise ConfigError(
            f"stage 2 on split {split} would start from {start}, a stage-1 model of split {trained_split}, whose "
            f"training images may include test images of {split}: start from stage 1 of split {split}"
        )
    if trained_digest != meta.get("split_digest"):
        raise ConfigError(
            f"stage 2 would start from {start}, trained on split {split} as it was in another preparation of the "
            f"cache (split digest {trained_digest}, now {meta.get('split_digest')}): its training images may be "
            f"test images of {split} now; train stage 1 again on this cache"
        )


@register_recipe
class IEITRecipe(Recipe[IEITParams]):
    name = "ieit"
    title = "IEIT (Song et al., TCSVT 2022)"
    Params = IEITParams
    tiny_params = TINY
    reseed_per_batch = True
    channels_last_helps = False  # ViTs
    metric_names = (*METRIC_NAMES, "lq_n", "lq_srcc", "lq_plcc", LQ_METRIC)
    report_metrics = ("srcc", "plcc", "lq_srcc", "lq_plcc", "plcc_logistic", "krcc", "rmse")
    eval_params = ("select_enhanced", "lq_threshold")
    predict_params = ("select_enhanced", "classifier")  # lq_threshold needs labels; classifier needs files
    # Set on the per-split copy `fit` makes (stage 2): partner of each dataset index, or None.
    partner_of: dict[int, int] | None = None

    # ------------------------------------------------------------------------- parameters and model

    def dataset_params(self, params: IEITParams, dataset: DatasetLike) -> IEITParams:
        """`lq_threshold none` -> the evaluated dataset's low-quality bar (CID2013: 2.4)."""
        if params.lq_threshold is not None:
            return params
        return dataclasses.replace(params, lq_threshold=low_quality_threshold(dataset.attrs.get("dataset")))

    def check_params(self, params: IEITParams) -> None:
        if params.stage not in STAGES:
            raise ConfigError(f"stage must be 1 or 2, got {params.stage}")
        if params.from_run is not None and params.stage != 2:
            raise ConfigError("--from names the stage-1 run that stage 2 starts from; it needs --stage 2")
        if params.batch_size is not None and params.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {params.batch_size}")
        check_protocol(params)
        if params.label_scale == "native":  # the bar and the stage-2 partners read labels as 1-5, higher better
            raise ConfigError(
                "--label-scale native: IEIT's low-quality images are those labelled below --lq-threshold on the 1-5 "
                "scale (stage 2 trains on them; lq_srcc and lq_plcc score them), and a dataset's own scale puts "
                "other images there (0-100 scores, or the best images of a DMOS set); use paper or range"
            )
        if params.lr is None and params.lr_phases is None:
            check_min_lr(f"stage {params.stage}'s lr_phases", STAGE_PHASES[params.stage], params.min_lr)

    def idle_params(self, params: IEITParams) -> dict[str, str]:
        idle: dict[str, str] = {}
        if not params.select_enhanced:
            idle["classifier"] = "the selection rule's classifier, and --no-select-enhanced leaves that rule out"
        if params.stage == 2:
            why = "stage 1 only: stage 2 starts from the whole stage-1 model (--from)"
            idle |= {"freeze_epochs": why, "pretrained": why}
        return idle

    def model_name(self, params: IEITParams) -> str:
        return "ieit"

    def build_model(self, params: IEITParams, *, tiny: bool, pretrained: bool) -> nn.Module:
        from iqa_cli.models import create

        backbone = None
        if pretrained and params.pretrained and params.stage == 1:  # stage 2 loads all of stage 1 instead
            from iqa_cli.weights.resolve import resolve_weights

            backbone = resolve_weights(params.pretrained)
        return create("ieit", tiny=tiny, img_size=params.crop_size, dropout=params.dropout, backbone_weights=backbone)

    def initialize(self, model: nn.Module, params: IEITParams, *, split: str, meta: Mapping[str, Any]) -> None:
        if params.stage != 2:
            return
        from iqa_cli.models import load_checkpoint
        from iqa_cli.models.checkpoint import read_state_dict

        path = Path(str(meta[STAGE1_KEY]))
        _, saved = read_state_dict(path)
        method = saved.get("method")
        if method and method != self.name:
            raise CheckpointError(f"stage 2 starts from an IEIT stage-1 model, not a '{method}' one", path=path)
        load_checkpoint(model, path)

    # ------------------------------------------------------------------------------------------ data

    def wrap_dataset(self, dataset: DatasetLike, path: Path, params: IEITParams) -> DatasetLike:
        from iqa_cli.enhance.store import PairedDataset, open_enhanced

        enhanced = open_enhanced(dataset, path)
        if params.select_enhanced and enhanced.keep is None:
            enhanced.close()
            raise DataError(
                f"the enhanced images hold no selection-rule results (made with --no-selection); compute them with "
                f"`iqa prepare enhance {path}`, or use every E with --no-select-enhanced",
                path=enhanced.path,
            )
        return PairedDataset(dataset, enhanced, use_selection=params.select_enhanced)

    def data_identity(self, dataset: DatasetLike) -> dict[str, str]:
        """The enhanced images E and the selection rule's stored choices (whether a test uses them is its
        own option, `--no-select-enhanced`, and says so itself)."""
        from iqa_cli.enhance.store import PairedDataset, enhanced_digest

        if not isinstance(dataset, PairedDataset):
            return {}
        return {ENHANCED_KEY: enhanced_digest(dataset.enhanced, dataset.enhanced.keep)}

    def check_split_start(self, params: IEITParams, meta: Mapping[str, Any], split: str, *, tiny: bool) -> None:
        if params.stage == 2:
            self._stage1_start(params, meta, split, tiny=tiny)

    def _stage1_start(self, params: IEITParams, meta: Mapping[str, Any], split: str, *, tiny: bool) -> Path:
        """The stage-1 kept model stage 2 on `split` starts from, checked to be of this split as it is now
        and to have trained with the E the cache has beside it."""
        from iqa_cli.train.stage_runs import earlier_stage_weights

        dataset = str(meta.get("dataset", ""))
        start = earlier_stage_weights(
            self.name,
            stage=1,
            dataset=dataset,
            split=split,
            tiny=tiny,
            named=params.from_run,
            train_hint=f"iqa train ieit --data {dataset} --split {split} --stage 1" + (" --tiny" if tiny else ""),
            split_digest=meta.get("split_digest"),
            images_digest=meta.get("images_digest"),
        )
        _check_same_split(start, meta, split)
        _check_same_enhanced(start, meta.get(ENHANCED_KEY))
        return start

    def file_scoring_note(self, meta: Mapping[str, str], weights: str) -> str | None:
        from iqa_cli.enhance.ops import METHOD

        trained = _trained_enhancement(meta)
        if trained is None or _same_enhancement(trained, METHOD):
            return None
        return (
            f"{weights} trained with enhanced images made otherwise ({trained[:120]}); image files get this iqa's "
            "built-in enhancement, so their scores are not on the footing of the model's tests"
        )

    def dataset_scoring_note(self, meta: Mapping[str, str], dataset: DatasetLike, weights: str) -> str | None:
        trained = _trained_enhancement(meta)
        now = getattr(getattr(dataset, "enhanced", None), "attrs", {}).get("enhancement")
        if trained is None or not now or _same_enhancement(trained, str(now)):
            return None
        return (
            f"{weights} trained with enhanced images made otherwise ({trained[:120]}) than this cache's "
            f"({str(now)[:120]}): these figures are not on the footing of its training"
            + (" (the authors' E: `iqa prepare enhance --from-authors`)" if trained.startswith("authors") else "")
        )

    def batch_extra(
        self, indices: np.ndarray, *, parts: SplitParts, epoch: int, batch: int, seed: int, params: BaseParams
    ) -> np.ndarray | None:
        if self.partner_of is None:
            return None
        return np.asarray([self.partner_of[int(i)] for i in indices], dtype=np.int64)

    # ----------------------------------------------------------------------------------------- views

    def view_shapes(self, params: IEITParams) -> dict[str, tuple[int, ...]]:
        side = params.global_source
        return {"original": (3, side, side), "enhanced": (3, side, side)}

    def stored_views(self, images: list[torch.Tensor], params: IEITParams) -> Views:
        from iqa_cli.train.augment import resize_square

        if images and images[0].shape[0] == 3:  # image files (iqa predict): E is made here
            images = self.paired_on_the_fly(images, params)
        return {
            "original": resize_square([image[:3] for image in images], params.global_source),
            "enhanced": resize_square([image[3:] for image in images], params.global_source),
        }

    def paired_on_the_fly(self, images: list[torch.Tensor], params: IEITParams) -> list[torch.Tensor]:
        """(6, h, w) [I, E] per uint8 (3, h, w) image: the built-in enhancement, then the selection rule."""
        import torch

        from iqa_cli.enhance.classifier import cached_classifier, classifier_file, selection
        from iqa_cli.enhance.ops import enhance_batch

        enhanced, _ = enhance_batch(images)
        if params.select_enhanced:
            path = classifier_file(params.classifier, switch_off=None)
            keep, _, _ = selection(cached_classifier(str(path), str(images[0].device)), images, enhanced)
            enhanced = [e if k else i for i, e, k in zip(images, enhanced, keep.tolist(), strict=True)]
        return [torch.cat([i, e]) for i, e in zip(images, enhanced, strict=True)]

    def train_inputs(self, views: Views, seed: int, params: IEITParams) -> tuple[torch.Tensor, ...]:
        from iqa_cli.models.imagenet import imagenet_normalize
        from iqa_cli.train.augment import batch_crop_flip, random_crop_flip

        crop = batch_crop_flip if params.crop_mode == "batch" else random_crop_flip
        # One seed for both: I and E get the same crop and flip, as in the authors' scripts.
        return tuple(imagenet_normalize(crop(views[k], params.crop_size, seed)) for k in ("original", "enhanced"))

    def eval_inputs(self, views: Views, params: IEITParams) -> tuple[torch.Tensor, ...]:
        from iqa_cli.models.imagenet import imagenet_normalize
        from iqa_cli.models.vtiqa_views import global_view

        size = params.crop_size
        offset = (views["original"].shape[-1] - size) // 2
        return tuple(imagenet_normalize(global_view(views[k], offset, offset, size)) for k in ("original", "enhanced"))

    # ---------------------------------------------------------------------------------- optimisation

    def metrics(self, pred: np.ndarray, labels: np.ndarray, params: IEITParams) -> dict[str, Any]:
        values: dict[str, Any] = compute_metrics(pred, labels).as_dict()
        values.update(low_quality_metrics(pred, labels, lq_bar(params)))
        lq = values["lq_plcc"] if values["lq_n"] >= LQ_MIN else 0.0
        values[LQ_METRIC] = values["plcc"] + lq
        return values

    def loss(self, pred: torch.Tensor, target: torch.Tensor, params: IEITParams) -> torch.Tensor:
        return regression_loss(params.loss or STAGE_LOSS[params.stage], pred, target)

    def training_loss(self, module: nn.Module, batch: TrainBatch, params: IEITParams) -> torch.Tensor:
        x_original, x_enhanced = batch.layout(self.train_inputs(batch.views, batch.seed, params))
        n, target = batch.size, batch.target
        if params.stage == 1:
            s1, s2 = module(x_original, x_enhanced, mode="stage1")
            return self.loss(s1, target, params) + self.loss(s2, target, params)
        s1, s2 = module(x_original[:n], x_enhanced[:n], x_original[n:], x_enhanced[n:], mode="stage2")
        return self.loss(s1, target[:n], params) + self.loss(s2, target[n:], params)

    def configure_epoch(self, network: nn.Module, epoch: int, params: IEITParams) -> None:
        model = cast("IEIT", network)
        model.requires_grad_(True)
        if params.stage == 1:
            for encoder in (model.encoder1, model.encoder2):
                encoder.requires_grad_(epoch >= params.freeze_epochs)
        else:
            model.encoder1.requires_grad_(False)
        for encoder in (model.encoder1, model.encoder2):
            encoder.head.requires_grad_(False)  # the ImageNet heads take no part (DDP needs every trainable one used)

    def make_optimizer(self, model: nn.Module, params: IEITParams) -> torch.optim.Optimizer:
        return esnthere_optimizer(model.parameters(), params, phases(params)[0][1])

    def make_schedule(self, params: IEITParams) -> PhasePlateau:
        return esnthere_schedule(phases(params), params)

    # ------------------------------------------------------------------------------------- one split

    def fit(self, ctx: FitContext[IEITParams], parts: SplitParts, out_dir: Path, *, resume: bool) -> FitResult:
        """One stage on one split: the stage's protocol values filled in, and for stage 2 the
        low-quality partners of this split and the stage-1 model it starts from."""
        from iqa_cli.models.checkpoint import DIGEST_KEY, read_metadata
        from iqa_cli.train.config import to_plain
        from iqa_cli.train.engine import Trainer
        from iqa_cli.train.runs import LAST
        from iqa_cli.train.state import resumable_meta

        params = stage_params(ctx.params)
        made = getattr(getattr(ctx.dataset, "enhanced", None), "attrs", {}).get("enhancement")
        # The checkpoint keeps the given options with the stage's values filled in, and the options this
        # dataset resolved (`params_on_dataset`) likewise: filled on one side only, the stage's values read
        # as choices of the dataset, and every evaluation on it warned that they had changed.
        filled = to_plain(params)
        meta = {**ctx.meta, "params": {**ctx.meta["params"], **{k: filled[k] for k in STAGE_FILLED}}}
        if made:  # so scoring image files, which get the built-in E, can say when the model saw another E
            meta[ENHANCEMENT_KEY] = str(made)
        if "params_on_dataset" in ctx.meta:
            meta["params_on_dataset"] = filled
        bound = self
        if params.stage == 2:
            bound = copy.copy(self)  # this split's copy: the engine asks it for each batch's partners
            partners = low_quality_partners(parts.train, ctx.labels, lq_bar(params))
            bound.partner_of = dict(zip(parts.train.tolist(), partners.tolist(), strict=True))
            last = out_dir / LAST
            if resume and last.is_file():  # the start weights are in the resumable state; keep their record
                saved = resumable_meta(last)
                meta.update({key: saved[key] for key in (STAGE1_KEY, STAGE1_DIGEST_KEY) if key in saved})
            else:
                start = self._stage1_start(params, ctx.meta, parts.name, tiny=ctx.tiny)
                meta[STAGE1_KEY] = str(start)
                start_digest = read_metadata(start).get(DIGEST_KEY)
                if start_digest:
                    meta[STAGE1_DIGEST_KEY] = start_digest
                if ctx.dist.is_main:
                    log.info(
                        f"split {parts.name}: stage 2 starts from {start}; {len(set(partners.tolist()))} low-quality "
                        f"training images (label < {lq_bar(params):g}) are the partners"
                    )
        return Trainer(dataclasses.replace(ctx, recipe=bound, params=params, meta=meta), parts, out_dir).fit(
            resume=resume
        )
