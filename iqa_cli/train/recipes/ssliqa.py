"""SSL-IQA semi-supervised training and evaluation (methods spec Part B; Nano-cd/SSL_IQA `train_kd_semi.py`).

Protocol (the `parse_config()` defaults): the training part of a split is partitioned into
`--labeled` N labelled images (2000) and an unlabelled pool (the rest). A teacher and a student
(`--network`: AlexNet + TReS by default, as the script; `alexnet` is AlexNet + ResNet-101, the pair
of the released test checkpoint; also `inceptionresv2` and `googlenet`), both from ImageNet weights
and both ending in a 5-way softmax over the rating categories, train together on one summed loss
with one backward pass per step:

    L = MSE(pS(x_l), y) + w(e) * (L_IKD + 100 * L_AGKD) + MSE(pT(x_l), y)
    L_IKD  = MSE(pS(x_u), sg pT(x_u)) + MSE(pS(x_l), sg pT(x_l))          (prediction consistency)
    L_AGKD = angle(fS(x_u), fT(x_u)) + angle(fS(x_l), fT(x_l))           (relation consistency)
    w(e)   = exp(-5 (1 - clip(e, 0, 10) / 10)^2), e the 0-indexed epoch    (mean-teacher sigmoid ramp)

y is the image's 5-bin rating distribution, p the softmax outputs, f the pooled backbone features,
sg the stop-gradient, and `angle` the RKD angle loss (Park et al., CVPR 2019): SmoothL1 between the
N x N x N cosines of the normalised difference vectors of the two branches' features, the teacher's
under no_grad. The teacher therefore receives only its own supervised loss. Adam lr 2e-4 for both
branches (one Adam over both branches is the authors' two Adams with equal settings: Adam's update
is per parameter), StepLR(2, 0.5) per epoch, 10 epochs; labelled batch 16, unlabelled batch
ratio x 16 = 32. Each image is repeated `patch_num` = 10 times per epoch (a fresh crop each), the
labelled and the unlabelled set alike. Views: the whole image resized to 512 x 384 as H x W (the
authors' `Resize([512, 384])`, which squeezes landscape KonIQ images into portrait; Pillow's
bilinear filter), then a random 224 crop and horizontal flip per image; at test 10 random 224
crops (no flip) whose scores are averaged. Score = expectation sum_k k p_k of the 5-bin output.

How the engine reproduces it:
- Epoch length. The authors `zip` the labelled and the unlabelled loader, so an epoch ends with the
  shorter one. The epoch's pool (`train_pool`) is the labelled images repeated `patch_num` times; the
  unlabelled rows of batch b (`batch_extra`) are rows [b k, (b+1) k) of that epoch's seeded
  permutation of the unlabelled images repeated `patch_num` times (k = ratio x the batch's labelled
  rows). When the unlabelled loader is the shorter one (floor(U * patch_num / (ratio * batch))
  steps), the pool is cut to that many labelled batches by repeating the labelled images cyclically,
  so each appears floor or ceil(rows / N) times (which ones get the extra repeat is fixed by the
  partition, where `zip` truncates a fresh shuffle each epoch; same expectation). With KonIQ's
  split and N = 2000 the labelled loader is the shorter (1250 steps), as in the paper's setting. The
  engine keeps a last partial labelled batch where the authors' `drop_last` drops it (none for
  2000 x 10 / 16).
- Labels. KonIQ caches carry each image's rating distribution (c1..c5 of the official CSV,
  normalised); it is the target when the label mapping is the identity (KonIQ's 1-5 MOS). Every
  other image gets a derived 5-bin label: the Gaussian discretised over categories 1..5 (outer bins
  take the tails) with the image's std on the 1-5 scale (the dataset's std times the mapping's
  scale; `--label-std` 0.7 where none is known: a chosen, typical spread of 1-5 ACR ratings), its
  centre shifted so the distribution's expectation equals the 1-5 label exactly. Metrics compare
  the predicted expectation with the 1-5 label, as the authors' test does.
- Partition. The labelled N are the first N of a permutation (seeded by `--label-seed`) of the
  split's training side (its train part, plus its own val part where it has one); the rest is the
  unlabelled pool. The authors' split files take the first 2000 lines of a shuffled list.

Deviations, on purpose:
- Model selection. The authors keep the end-of-training student (no selection). Under the engine's
  default `--select-on val` a validation part (`--val-fraction`, 10 %) is carved from the labelled N,
  so every label the run uses, validation included, is within the budget N (the other N x 90 % train),
  and the kept model is the epoch with the best validation SRCC. `--select-on test --eval-every 10`
  is the authors' protocol exactly: all N labelled images train, one evaluation at the end, so the
  kept model is the last epoch and the test part chooses nothing.
- Both branches are kept (the pair is the checkpoint); `iqa eval ssliqa` scores with the student (the
  authors' deployed model) or with `--branch teacher`. The authors' scripts save the student alone:
  such a file (imported with `iqa weights import ssliqa-student FILE`, or `ssliqa-googlenet`) is the
  evaluation-only `student` variant. Their baseline.py saves one network trained alone; a teacher-type
  one (`ssliqa-teacher`, `ssliqa-tres`, `ssliqa-inceptionresnetv2`) is the `teacher` variant.
- The 10 test crops are the same 10 positions for every image (drawn once from `--test-seed`), so
  scores do not depend on batching or DDP sharding; the authors draw fresh positions per image.
- Datasets without rating distributions get the derived 5-bin labels above (the authors only
  trained on KonIQ and KADID-10k distributions, and their LIVE-C/NNID evaluation is broken:
  spec B.8); evaluation there uses the 1-5 mapped MOS.
- `--resize fixed` resizes to 384 x 512 (H x W) instead: the landscape 4:3 the authors presumably
  meant (KonIQ's own aspect; other aspects are still squeezed to 4:3).
- Input: the authors resized the 1024x768 release, which the KonIQ cache keeps by default; a cache
  prepared from the 512x384 release (or with `--size 512x384`) gives the resize other pixels.
- The teacher runs on the unlabelled batch without gradient (its outputs there are only targets, so
  the result is the same; it saves memory).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import numpy as np

from iqa_cli.errors import ConfigError, DataError
from iqa_cli.train.config import protocol_default
from iqa_cli.train.data import SplitParts
from iqa_cli.train.optim import fused_where_possible
from iqa_cli.train.recipes import register_recipe
from iqa_cli.train.recipes.base import BaseParams, Recipe, TrainBatch, Views
from iqa_cli.train.schedule import EpochDecay

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from pathlib import Path

    import torch
    from torch import nn

    from iqa_cli.models.ssliqa import PairOutputs, SSLIQAPair
    from iqa_cli.train.data import DatasetLike
    from iqa_cli.train.engine import FitContext, FitResult

NUM_BINS = 5
ResizeMode = Literal["faithful", "fixed"]
# train_kd_semi.py's --network values (the pairs of `iqa_cli.models.ssliqa.PAIRS`, in its order; tested)
Network = Literal["tres", "alexnet", "inceptionresv2", "googlenet"]
Branch = Literal["student", "teacher"]
Variant = Literal["pair", "student", "teacher"]
# The one network an authors' checkpoint holds, by --network: the pair's student branch
# (train_kd_semi.py saves the student alone) or its teacher branch (baseline.py trains and saves one
# network, `--network resnet101` or `inceptionresv2` as test.py scores it; `iqa_cli.models.ssliqa.PAIRS`;
# tested). Named here so that naming the model imports no network code.
STUDENT_MODELS = {
    "tres": "ssliqa-student",
    "alexnet": "ssliqa-student",
    "inceptionresv2": "ssliqa-student",
    "googlenet": "ssliqa-googlenet",
}
TEACHER_MODELS = {
    "tres": "ssliqa-tres",
    "alexnet": "ssliqa-teacher",
    "inceptionresv2": "ssliqa-inceptionresnetv2",
    "googlenet": "ssliqa-teacher",
}
SINGLE_MODELS = {"student": STUDENT_MODELS, "teacher": TEACHER_MODELS}


def _imported_networks() -> dict[str, tuple[str, str]]:
    """Each network of `SINGLE_MODELS` as (variant, --network), for a file `iqa weights import MODEL FILE`
    stored. A network that is a branch of several pairs takes the first: the AlexNet pairs first (that of
    the released test checkpoint), though any of them builds the same network."""
    out: dict[str, tuple[str, str]] = {}
    for variant, models in SINGLE_MODELS.items():
        for network in sorted(get_args(Network), key=lambda name: name != "alexnet"):
            out.setdefault(models[network], (variant, network))
    return out


IMPORTED = _imported_networks()
Metric = Literal["srcc", "plcc", "plcc_logistic", "krcc"]
MIN_LABEL_STD = 0.2  # floor of the derived labels' spread (a point mass cannot match a fractional mean)
MIN_INCEPTION_CROP = 75  # the smallest side InceptionResNetV2's valid convolutions and pools take


@dataclass
class SSLIQAParams(BaseParams):
    epochs: int = field(default=10, metadata={"help": "epochs (train_kd_semi.py: 10)"})
    batch_size: int = field(default=16, metadata={"help": "labelled batch size (global over DDP ranks)"})
    eval_batch_size: int = field(default=16, metadata={"help": "evaluation batch size in images (per rank)"})
    selection_metric: Metric = field(
        default="srcc", metadata={"help": "metric that picks the kept model: srcc, plcc, plcc_logistic or krcc"}
    )
    # both land on 1-5, the scale of the 5 rating categories
    label_scale: Literal["paper", "range"] = protocol_default(
        BaseParams, "label_scale", "paper", help="training label scale: paper (the method's mapping) or range (to 1-5)"
    )
    labeled: int = field(
        default=2000, metadata={"help": "labelled images taken from the split's training part; the rest is unlabelled"}
    )
    label_seed: int = field(default=0, metadata={"help": "seed of the labelled/unlabelled partition"})
    ratio: int = field(default=2, metadata={"help": "unlabelled rows per labelled row in a batch (0: none)"})
    baseline: bool = field(
        default=False,
        metadata={
            "help": "the authors' baseline.py: each branch trained alone on the labelled images (MSE only, no "
            "unlabelled rows, no consistency), same Adam and StepLR; score one with --branch"
        },
    )
    patch_num: int = field(
        default=10, metadata={"help": "times each image appears per epoch (a fresh random crop each)"}
    )
    lr: float = field(default=2e-4, metadata={"help": "Adam learning rate (both branches)"})
    lr_step: int = field(default=2, metadata={"help": "StepLR: epochs between decays"})
    lr_gamma: float = field(default=0.5, metadata={"help": "StepLR: learning-rate factor at each decay"})
    rampup_epochs: int = field(
        default=10, metadata={"help": "length of the sigmoid ramp of the consistency weight (epochs)"}
    )
    relation_weight: float = field(default=100.0, metadata={"help": "weight of the RKD-angle relation loss"})
    network: Network = field(
        default="tres",
        metadata={
            "help": "student + teacher pair, train_kd_semi.py --network: tres (AlexNet + TReS, the authors' default), "
            "alexnet (AlexNet + ResNet-101, the released checkpoint's pair), inceptionresv2 (AlexNet + "
            "InceptionResNetV2) or googlenet (GoogLeNet + ResNet-101)"
        },
    )
    teacher_pretrained: str | None = field(
        default="imagenet",
        metadata={
            "help": "teacher backbone start weights: imagenet (the weights-store entry of the pair's teacher), "
            "another store name or file, or none for random init"
        },
    )
    student_pretrained: str | None = field(
        default="imagenet",
        metadata={
            "help": "student backbone start weights: imagenet (the weights-store entry of the pair's student), "
            "another store name or file, or none for random init"
        },
    )
    resize: ResizeMode = field(
        default="faithful",
        metadata={"help": "faithful (H x W = long x short, the authors' portrait squeeze) or fixed (short x long)"},
    )
    resize_long: int = field(default=512, metadata={"help": "long side of the resize before cropping"})
    resize_short: int = field(default=384, metadata={"help": "short side of the resize before cropping"})
    crop_size: int = field(default=224, metadata={"help": "side of the random crops (training and test)"})
    test_crops: int = field(default=10, metadata={"help": "random crops averaged per test image"})
    test_seed: int = field(default=0, metadata={"help": "seed of the test crop positions"})
    branch: Branch = field(default="student", metadata={"help": "branch that scores at test time: student or teacher"})
    variant: Variant = field(
        default="pair",
        metadata={
            "help": "pair (student and teacher, what iqa trains and saves), student (the student alone, as the "
            "authors' train_kd_semi.py saves it) or teacher (the teacher network alone, as their baseline.py "
            "saves it); the last two are evaluation only"
        },
    )
    label_std: float = field(
        default=0.7,
        metadata={"help": "std (1-5 scale) of the derived 5-bin label where the dataset gives no distribution or std"},
    )


TINY = {
    "teacher_pretrained": None,
    "student_pretrained": None,
    "resize_long": 112,
    "resize_short": 104,
    "crop_size": 96,  # the smallest multiple of 32 (TReS) that InceptionResNetV2's stem takes (>= 75)
    "batch_size": 8,
    "eval_batch_size": 8,
    "test_crops": 2,
    "patch_num": 2,
    "labeled": 16,
}


# ------------------------------------------------------------------------------------------- losses


def sigmoid_rampup(epoch: float, length: float) -> float:
    """exp(-5 (1 - clip(epoch, 0, length) / length)^2): the mean-teacher `ramps.sigmoid_rampup`."""
    if length <= 0:
        return 1.0
    phase = 1.0 - min(max(float(epoch), 0.0), float(length)) / float(length)
    return float(math.exp(-5.0 * phase * phase))


def angle_potentials(features: torch.Tensor) -> torch.Tensor:
    """The N x N x N RKD angle tensor, flattened: entry (i, j, k) = <e_ji, e_ki>, with e_ji the unit
    vector from feature i to feature j (zero for j = i)."""
    import torch
    import torch.nn.functional as F

    diff = features.unsqueeze(0) - features.unsqueeze(1)  # [i, j] = f_j - f_i
    unit = F.normalize(diff, p=2, dim=2)
    return torch.bmm(unit, unit.transpose(1, 2)).reshape(-1)


def rkd_angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """RKD angle loss (Park et al., CVPR 2019): SmoothL1 (beta 1, mean) between the branches' angle
    tensors; the teacher's is a constant (no gradient). The feature widths may differ."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        target = angle_potentials(teacher.float())
    return F.smooth_l1_loss(angle_potentials(student.float()), target)


def prediction_consistency(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE between the student's and the (stop-gradient) teacher's softmax outputs."""
    import torch.nn.functional as F

    return F.mse_loss(student.float(), teacher.detach().float())


def loss_terms(
    out: PairOutputs,
    target: torch.Tensor,
    *,
    epoch: int,
    rampup_epochs: int,
    relation_weight: float,
    coupled: bool = True,
) -> dict[str, torch.Tensor]:
    """Every term of the SSL-IQA loss for one step; `total` is what is minimised. `target` is the
    labelled rows' rating distributions (n, 5)."""
    import torch.nn.functional as F

    (p_s, f_s), (p_t, f_t) = out.student_labelled, out.teacher_labelled
    target = target.float()
    ikd = prediction_consistency(p_s, p_t)
    agkd = rkd_angle_loss(f_s, f_t)
    if out.student_unlabelled is not None and out.teacher_unlabelled is not None:
        (pu_s, fu_s), (pu_t, fu_t) = out.student_unlabelled, out.teacher_unlabelled
        ikd = prediction_consistency(pu_s, pu_t) + ikd
        agkd = rkd_angle_loss(fu_s, fu_t) + agkd
    # Uncoupled (the baseline): no consistency term, so each branch's gradient comes from its own MSE
    # alone and one Adam over both is two independent baselines (Adam's update is per parameter).
    weight = sigmoid_rampup(epoch, rampup_epochs) if coupled else 0.0
    student_sup = F.mse_loss(p_s.float(), target)
    teacher_sup = F.mse_loss(p_t.float(), target)
    total = student_sup + weight * (ikd + relation_weight * agkd) + teacher_sup
    return {"total": total, "student": student_sup, "teacher": teacher_sup, "ikd": ikd, "agkd": agkd}


# ------------------------------------------------------------------------------------------- labels


def gaussian_distributions(mean: np.ndarray, std: np.ndarray, bins: int = NUM_BINS) -> np.ndarray:
    """(n, bins) discretised Gaussians over the categories 1..bins whose expectation is `mean`.

    p_k = Phi((k + 1/2 - m) / s) - Phi((k - 1/2 - m) / s), the first and last bins taking the tails;
    the centre m is found by bisection so that sum_k k p_k equals `mean` (clipped to [1, bins]): the
    expectation of a clipped Gaussian is pulled towards the middle otherwise. s = max(std, 0.2).
    """
    from scipy.special import ndtr

    target = np.clip(np.asarray(mean, dtype=np.float64), 1.0, float(bins))
    sigma = np.maximum(np.broadcast_to(np.asarray(std, dtype=np.float64), target.shape), MIN_LABEL_STD)
    edges = np.arange(1.5, bins, 1.0)  # the bins-1 inner category boundaries

    def probs(centre: np.ndarray) -> np.ndarray:
        cdf = ndtr((edges[None, :] - centre[:, None]) / sigma[:, None])
        cdf = np.concatenate([np.zeros_like(centre)[:, None], cdf, np.ones_like(centre)[:, None]], axis=1)
        return np.diff(cdf, axis=1)

    categories = np.arange(1, bins + 1, dtype=np.float64)
    low = np.full_like(target, 1.0 - 10.0 * sigma.max() - bins)
    high = np.full_like(target, float(bins) + 10.0 * sigma.max() + bins)
    for _ in range(80):  # the expectation is strictly increasing in the centre
        middle = (low + high) / 2
        above = probs(middle) @ categories > target
        high, low = np.where(above, middle, high), np.where(above, low, middle)
    return probs((low + high) / 2)


# ------------------------------------------------------------------------------------------- partition


@dataclass(frozen=True)
class SemiParts(SplitParts):
    """A split's parts with the semi-supervised partition: `labelled` images train with their labels,
    `unlabelled` ones without; `train` is both (what the epoch reads), `val` is carved from the N."""

    labelled: np.ndarray
    unlabelled: np.ndarray


def partition(side: np.ndarray, labeled: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(labelled, unlabelled), both sorted: the first `labeled` images of a seeded permutation."""
    order = np.random.default_rng(seed).permutation(np.sort(np.asarray(side, dtype=np.int64)))
    return np.sort(order[:labeled]), np.sort(order[labeled:])


def as_semi(parts: SplitParts, params: SSLIQAParams) -> SemiParts:
    """`parts` as built by `SSLIQARecipe.fit`, or, for plain parts, the partition of their train part."""
    if isinstance(parts, SemiParts):
        return parts
    check_budget(params.labeled, parts.train.size, parts.name)
    labelled, unlabelled = partition(parts.train, params.labeled, params.label_seed)
    return SemiParts(parts.name, parts.train, parts.val, parts.test, parts.select_on, labelled, unlabelled)


def check_budget(labeled: int, available: int, split: str) -> None:
    if labeled > available:
        raise ConfigError(
            f"--labeled {labeled} is more than the {available} training images of split '{split}' "
            "(the labelled images come from the split's training part)"
        )


def unlabelled_ratio(params: SSLIQAParams) -> int:
    """Unlabelled rows per labelled row: none for the supervised-only baseline."""
    return 0 if params.baseline else int(params.ratio)


def epoch_rows(labelled: int, unlabelled: int, params: SSLIQAParams) -> int:
    """Labelled rows of one epoch: the shorter of the two zipped loaders (see the module docstring)."""
    rows = labelled * params.patch_num
    if unlabelled == 0 or unlabelled_ratio(params) == 0:
        return rows
    unlabelled_steps = unlabelled * params.patch_num // (unlabelled_ratio(params) * params.batch_size)
    if unlabelled_steps == 0:
        raise ConfigError(
            f"the {unlabelled} unlabelled images x patch_num {params.patch_num} fill no unlabelled batch of "
            f"{params.ratio * params.batch_size} (ratio x batch size); lower --ratio or --labeled"
        )
    return min(rows, unlabelled_steps * params.batch_size)


_ORDER_CACHE: dict[tuple[Any, ...], np.ndarray] = {}


def unlabelled_order(unlabelled: np.ndarray, repeats: int, seed: int, epoch: int) -> np.ndarray:
    """The epoch's shuffled unlabelled rows (each image `repeats` times); the same on every rank."""
    key = (seed, epoch, repeats, unlabelled.tobytes())
    if key not in _ORDER_CACHE:
        _ORDER_CACHE.clear()  # one epoch at a time
        rows = np.repeat(np.asarray(unlabelled, dtype=np.int64), repeats)
        _ORDER_CACHE[key] = np.random.default_rng([seed, epoch, 1]).permutation(rows)
    return _ORDER_CACHE[key]


# ------------------------------------------------------------------------------------------- recipe


@register_recipe
class SSLIQARecipe(Recipe[SSLIQAParams]):
    name = "ssliqa"
    title = "SSL-IQA (semi-supervised teacher-student IQA, TMM 2022)"
    Params = SSLIQAParams
    tiny_params = TINY
    channels_last_helps = True  # two CNNs
    report_metrics = ("srcc", "plcc_logistic", "krcc", "rmse", "plcc")  # the authors' four first
    eval_params = ("branch", "test_crops", "test_seed")
    # The authors' LIVE Challenge evaluation is not published: the field's 1,162 test images (as `random_K`).
    cross_skips_training_images = True

    def idle_params(self, params: SSLIQAParams) -> dict[str, str]:
        if not params.baseline:
            return {}
        why = "--baseline trains each branch alone on the labelled images: no unlabelled rows, no consistency terms"
        return {"ratio": why, "rampup_epochs": why, "relation_weight": why}

    def check_params(self, params: SSLIQAParams) -> None:
        if params.variant != "pair" and params.branch != params.variant:
            why = {
                "student": "the authors' scripts save no teacher beside it",
                "teacher": "a network trained alone, as the authors' baseline.py saves it",
            }[params.variant]
            why += "; an evaluation-only variant"  # what `iqa train --variant ...` meets first
            raise ConfigError(f"--branch {params.branch}: the checkpoint holds the {params.variant} only ({why})")
        for name in ("patch_num", "lr_step", "test_crops", "crop_size", "batch_size", "eval_batch_size"):
            if getattr(params, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(params, name)}")
        if params.labeled < 2:
            raise ConfigError(f"labeled must be at least 2 (the relation loss compares images), got {params.labeled}")
        for name in ("ratio", "rampup_epochs", "relation_weight"):
            if getattr(params, name) < 0:
                raise ConfigError(f"{name} cannot be negative, got {getattr(params, name)}")
        if not params.lr > 0 or not params.lr_gamma > 0 or not params.label_std > 0:
            raise ConfigError("lr, lr_gamma and label_std must be positive")
        if params.crop_size > min(params.resize_long, params.resize_short):
            raise ConfigError(
                f"crop_size {params.crop_size} is larger than the {params.resize_long}x{params.resize_short} resize"
            )
        if params.network == "tres" and params.crop_size % 32:
            raise ConfigError(
                f"crop_size {params.crop_size}: the TReS teacher needs a multiple of 32 (224 as the authors)"
            )
        if params.network == "inceptionresv2" and params.crop_size < MIN_INCEPTION_CROP:
            raise ConfigError(
                f"crop_size {params.crop_size}: the InceptionResNetV2 teacher needs at least {MIN_INCEPTION_CROP}"
            )

    def check_training(self, params: SSLIQAParams) -> None:
        if params.variant != "pair":
            raise ConfigError(
                f"--variant {params.variant} is evaluation-only (the authors' single-network checkpoints): iqa "
                "trains the pair (--baseline for each branch alone), and scores its student by default"
            )

    def saved_params(self, saved: dict[str, Any]) -> dict[str, Any]:
        """Runs and checkpoints written before `network` existed trained the AlexNet + ResNet-101 pair."""
        return {"network": "alexnet", **saved}

    def model_name(self, params: SSLIQAParams) -> str:
        return SINGLE_MODELS[params.variant][params.network] if params.variant != "pair" else "ssliqa"

    def imported_params(self, model: str) -> dict[str, Any] | None:
        """An imported student (`iqa weights import ssliqa-student FILE`, or `ssliqa-googlenet`) is the
        student variant, an imported teacher network (`ssliqa-teacher`, `ssliqa-tres`,
        `ssliqa-inceptionresnetv2`) the teacher variant, scored with the branch it holds."""
        if model in IMPORTED:
            variant, network = IMPORTED[model]
            return {"variant": variant, "network": network, "branch": variant}
        return super().imported_params(model)

    def build_model(self, params: SSLIQAParams, *, tiny: bool, pretrained: bool) -> nn.Module:
        from iqa_cli.models import create
        from iqa_cli.models.ssliqa import IMAGENET_WEIGHTS, load_backbone_weights, pair_branches
        from iqa_cli.weights.resolve import resolve_weights

        if params.variant != "pair":  # an authors' checkpoint to score: nothing to start from
            return create(self.model_name(params), tiny=tiny)
        model = cast("SSLIQAPair", create("ssliqa", tiny=tiny, network=params.network))
        if pretrained:
            for branch_name, branch, weights in zip(
                pair_branches(params.network),
                (model.student, model.teacher),
                (params.student_pretrained, params.teacher_pretrained),
                strict=True,
            ):
                if weights == "imagenet":
                    weights = IMAGENET_WEIGHTS[branch_name]
                if weights:
                    load_backbone_weights(branch, resolve_weights(weights))
        return model

    # ------------------------------------------------------------------------------------ labels

    def train_targets(self, dataset: DatasetLike, labels: np.ndarray, params: SSLIQAParams) -> np.ndarray:
        """Each image's 5-bin rating distribution: the dataset's own (KonIQ) where the labels are its
        native 1-5 scores, else the derived discretised Gaussian (module docstring)."""
        label_map = self.label_map(dataset.attrs, params)
        native_std = np.asarray(getattr(dataset, "std", np.full(len(labels), np.nan)), dtype=np.float64)
        std = native_std * abs(label_map.scale)
        std = np.where(np.isfinite(std) & (std > 0), std, params.label_std)  # 0 or NaN: not known
        targets = gaussian_distributions(np.asarray(labels, dtype=np.float64), std)
        given = getattr(dataset, "distributions", None)
        if given is not None and label_map.scale == 1.0 and label_map.offset == 0.0:
            given = np.asarray(given, dtype=np.float64)
            name = dataset.attrs.get("dataset", "?")
            if given.ndim != 2 or given.shape[1] != NUM_BINS:
                raise DataError(f"the cache of '{name}' has {given.shape} rating distributions, expected (n, 5)")
            known = np.isfinite(given).all(axis=1)
            sums = given[known].sum(axis=1)
            if (given[known] < 0).any() or (sums <= 0).any():
                raise DataError(f"the cache of '{name}' holds negative or empty rating distributions")
            targets[known] = given[known] / sums[:, None]
        return targets.astype(np.float32)

    def loss(self, pred: torch.Tensor, target: torch.Tensor, params: SSLIQAParams) -> torch.Tensor:
        import torch.nn.functional as F

        return F.mse_loss(pred.float(), target.float())  # a branch's supervised loss: MSE to the 5-bin label

    # ------------------------------------------------------------------------------------ partition

    def fit(self, ctx: FitContext[SSLIQAParams], parts: SplitParts, out_dir: Path, *, resume: bool) -> FitResult:
        from iqa_cli.train.engine import Trainer

        semi = self.semi_parts(ctx, parts)
        if ctx.dist.is_main:
            params = ctx.params
            steps = -(-epoch_rows(semi.labelled.size, semi.unlabelled.size, params) // params.batch_size)
            val = f" ({semi.val.size} of them held out for model selection)" if semi.val.size else ""
            log.info(
                f"ssliqa split {parts.name}: {params.labeled} labelled images{val}, {semi.unlabelled.size} "
                f"unlabelled; {steps} steps per epoch of {params.batch_size} labelled + "
                f"{unlabelled_ratio(params) * params.batch_size} unlabelled rows"
            )
        return Trainer(ctx, semi, out_dir).fit(resume=resume)

    def semi_parts(self, ctx: FitContext[SSLIQAParams], parts: SplitParts) -> SemiParts:
        """The partition of the split's training side; the validation part comes out of the labelled N."""
        from iqa_cli.data.splits import validation_split
        from iqa_cli.train.data import validation_groups

        params = ctx.params
        stored = ctx.dataset.split(parts.name)
        side = np.union1d(stored["train"], stored.get("val", np.empty(0, np.int64))).astype(np.int64)
        check_budget(params.labeled, side.size, parts.name)
        labelled, unlabelled = partition(side, params.labeled, params.label_seed)
        val = np.empty(0, np.int64)
        if parts.select_on == "val":
            groups = validation_groups(ctx.dataset)  # as every method's validation part
            labelled, val = validation_split(labelled, ctx.cfg.val_fraction, ctx.cfg.seed, ref_ids=groups)
            if val.size == 0:
                raise ConfigError(
                    f"split '{parts.name}': {params.labeled} labelled images are too few to hold out a validation "
                    "part (raise --labeled, or --select-on test)"
                )
            if groups is not None:  # the unlabelled images train too: none of the validation part's groups
                seen = np.isin(np.asarray(groups)[unlabelled], np.asarray(groups)[val])
                if seen.any() and ctx.dist.is_main:
                    log.info(
                        f"ssliqa split {parts.name}: {int(seen.sum())} unlabelled images of the validation part's "
                        "references (or copies of its files) are left out of training"
                    )
                unlabelled = unlabelled[~seen]
        train = np.union1d(labelled, unlabelled).astype(np.int64)
        return SemiParts(parts.name, train, val, parts.test, parts.select_on, labelled, unlabelled)

    def train_pool(self, parts: SplitParts, params: SSLIQAParams) -> np.ndarray:
        semi = as_semi(parts, params)
        rows = epoch_rows(semi.labelled.size, semi.unlabelled.size, params)
        return np.resize(semi.labelled, rows)  # each labelled image patch_num times (fewer if cut short)

    def batch_extra(
        self, indices: np.ndarray, *, parts: SplitParts, epoch: int, batch: int, seed: int, params: SSLIQAParams
    ) -> np.ndarray | None:
        from iqa_cli.train.engine import SEED_STRIDE

        semi = as_semi(parts, params)
        if semi.unlabelled.size == 0 or unlabelled_ratio(params) == 0:
            return None
        count = unlabelled_ratio(params) * len(indices)
        # `seed` is the batch's seed, run seed * SEED_STRIDE + position: the run seed orders the epoch.
        order = unlabelled_order(semi.unlabelled, params.patch_num, seed // SEED_STRIDE, epoch)
        return order[np.arange(batch * count, (batch + 1) * count) % order.size]

    # ------------------------------------------------------------------------------------ views

    def _resize_hw(self, params: SSLIQAParams) -> tuple[int, int]:
        if params.resize == "faithful":
            return params.resize_long, params.resize_short
        return params.resize_short, params.resize_long

    def view_shapes(self, params: SSLIQAParams) -> dict[str, tuple[int, ...]]:
        return {"image": (3, *self._resize_hw(params))}

    def stored_views(self, images: list[torch.Tensor], params: SSLIQAParams) -> Views:
        from iqa_cli.train.augment import resize_each

        return {"image": resize_each(images, *self._resize_hw(params), pil="bilinear")}

    def train_inputs(self, views: Views, seed: int, params: SSLIQAParams) -> tuple[torch.Tensor, ...]:
        from iqa_cli.train.augment import imagenet_normalize, random_crop_flip

        return (imagenet_normalize(random_crop_flip(views["image"], params.crop_size, seed)),)

    def eval_inputs(self, views: Views, params: SSLIQAParams) -> tuple[torch.Tensor, ...]:
        """`test_crops` crops per image, image-major: (B * test_crops, 3, crop, crop)."""
        import torch

        from iqa_cli.train.augment import crop_flip_at, imagenet_normalize

        images = views["image"]
        b, (h, w), n, size = images.shape[0], images.shape[-2:], params.test_crops, params.crop_size
        g = torch.Generator().manual_seed(params.test_seed)
        tops, lefts = torch.randint(h - size + 1, (n,), generator=g), torch.randint(w - size + 1, (n,), generator=g)
        source = torch.arange(b).repeat_interleave(n)
        crops = crop_flip_at(
            images, tops.repeat(b), lefts.repeat(b), torch.zeros(b * n, dtype=torch.bool), size, size, source=source
        )
        return (imagenet_normalize(crops),)

    def predict_batch(self, model: nn.Module, inputs: tuple[torch.Tensor, ...], params: SSLIQAParams) -> torch.Tensor:
        from iqa_cli.models.ssliqa import expected_score

        # A single-network checkpoint is that network (check_params refuses the other --branch for it).
        prob, _ = model(inputs[0]) if params.variant != "pair" else model(inputs[0], mode=params.branch)
        return expected_score(prob.float()).reshape(-1, params.test_crops).mean(dim=1)

    # ------------------------------------------------------------------------------------ optimisation

    def training_loss(self, module: nn.Module, batch: TrainBatch, params: SSLIQAParams) -> torch.Tensor:
        (x,) = batch.layout(self.train_inputs(batch.views, batch.seed, params))
        n = batch.size
        out = module(x[:n], x[n:], mode="train")  # one call: both branches, both batches (DDP sees it all)
        terms = loss_terms(
            out,
            batch.target[:n],
            epoch=batch.epoch,
            rampup_epochs=params.rampup_epochs,
            relation_weight=params.relation_weight,
            coupled=not params.baseline,
        )
        return terms["total"]

    def configure_epoch(self, model: nn.Module, epoch: int, params: SSLIQAParams) -> None:
        from iqa_cli.models.tres import ResNetStages

        model.requires_grad_(True)
        for module in model.modules():
            if isinstance(module, ResNetStages):
                # TReS keeps torchvision's ImageNet classifier (for the authors' files), which no forward
                # reaches: trainable, it stopped every DDP step waiting for its gradient (`--network tres`,
                # the default). The authors' never changes either (they compute it and drop it).
                module.fc.requires_grad_(False)

    def make_optimizer(self, model: nn.Module, params: SSLIQAParams) -> torch.optim.Optimizer:
        import torch

        parameters, fused = fused_where_possible(model.parameters())
        return torch.optim.Adam(parameters, lr=params.lr, **fused)

    def make_schedule(self, params: SSLIQAParams) -> EpochDecay:
        return EpochDecay(params.lr, "step", step=params.lr_step, gamma=params.lr_gamma)
