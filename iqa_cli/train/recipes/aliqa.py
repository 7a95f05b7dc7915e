"""AL-IQA training, selection and evaluation protocol (methods spec §0, §3, §5), as defaults that are all flags.

Protocol (the authors' `training/livew_rt25_{first,second,third}_step.py`, `..._fourth_step_ftencoders.py`
and `save_*_vote.py`): CLIP ViT-B/16 with three CoOp prompt learners (good/bad, clear/unclear, high/low
quality). A labelling budget is spent in three active-learning rounds (`iqa_cli.train.al.selection`:
uncertainty band plus representativeness, Borda-combined). Each round trains fresh prompts (n_ctx 4
in round 1, 8 after; both encoders frozen) on everything labelled so far: plain SGD (momentum 0,
weight decay 1e-4), batch 192, lr 0.001, 0.003 after epoch 10, 0.01 after epoch 20, evaluation every
5 epochs; more than 5 evaluations without improvement (after epoch 10) reload the best model and
multiply lr by 0.3; stop when lr < 5e-5. A final step starts from round 3's kept model and also
tunes the last four blocks of both towers, `ln_post` and `ln_final` (lr 0.001, batch 128, same
plateau rule). Loss: the sum over the three heads of a soft-label BCE with q = (MOS_1to5 - 1)/4.
Views: a 224 crop of the image resized to 244 (one offset and flip rule per batch, re-seeded per
batch as the authors do), centre crop at test, ImageNet normalisation (not CLIP's). Score: p(high
quality) of head 2. The kept model of each step maximises mean PLCC + mean SRCC over the 3 heads.

Run folder of one split: `round-<r>/` (one engine run each: `selected.json` lists the dataset
indices and names chosen in that round, plus the usual log, kept and resumable checkpoints),
`fine-tune/`, `distances.npz` (the representativeness input), `labelled.json`, and the final model
as `best.safetensors` (what `iqa eval aliqa` loads). `--resume` skips finished rounds and resumes
the interrupted one through the engine's own resumption.

Deviations, on purpose, each with its reason:
* Pool and test: the authors' pool is the whole dataset and their "test set" (also used to pick the
  kept model) is whatever was not selected. Here the pool is the split's training part, its test
  part stays untouched, and the kept model of every step is chosen on a validation part carved from
  the training part (the engine's default; those images are labelled in addition to the budget, as
  any validation set). `--select-on test` uses the whole training part as the pool and picks the kept
  model on the test part, the authors' habit (optimistic). The budget is a percentage of the pool.
* Budgets other than the published LIVEW 25 % (5 % + 10 % + 10 %): the same 1:2:2 split over three
  rounds is assumed, which reproduces the sizes of the released KonIQ index files exactly
  (rt05 503, rt10 1006, rt25 2518, rt80 8058 of 10073); band starts and weights as for 25 %.
* Representativeness: the distances to distilled images come from unreleased code. `--distances`
  takes the authors' file (`livew_ds.mat`, key `distance`, (5, 50, N); `--distance-order esnthere`
  for their cache order [X; Xtest], computed from the cache's own authors' order) or a .npy/.npz;
  without one a documented STAND-IN is computed: 5 seeded
  repeats of 50 k-means centroids of the pool's L2-normalised CLIP image features, Euclidean distances.
* Ties between equal combined scores follow numpy's argsort over the pool in dataset order (the
  authors kept each later pool in the previous round's ranking order, which only matters for exact ties).
* One run by default, with the weights the authors' final step replays (0.01, 0.01, 0.005); their sweep
  (each of 0.005, 0.01, 0.1, 1 trained 3 times, averaged) is `--sweep borda_weights --sweep-values
  0.005,0.01,0.1,1 --repeats 3` (iqa_cli.train.sweep). Prompt initialisation is seeded.
* The loss uses log-softmax (the authors' log(softmax) under fp16 can underflow), and q is clipped to
  [0, 1] (a no-op on the authors' datasets; protects labels outside 1-5).
* The reported score is 1 + 4 p(high quality), the authors' p mapped linearly onto the 1-5 training
  scale, so RMSE and native-scale predictions mean something; correlations are unchanged.
* Each step evaluates its start weights before training and keeps them unless an evaluation beats
  them, as the authors compare the first evaluation with the one before training (they then save the
  epoch-0 model under the old metric, which is not copied). Metrics: head 2's (the release tests)
  and the mean over the three heads (`heads_*`, the training scripts' headline).
* Evaluation batch 256 (the authors' 3456/768 are memory, not protocol). The plateau counter is not
  set to 1 when the last learning-rate phase starts (that is VT-IQA's rule, not AL-IQA's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from iqa_cli.errors import ConfigError
from iqa_cli.train.al.selection import (
    DEFAULT_BAND_STARTS,
    DEFAULT_KEEP,
    DEFAULT_SHARES,
    DEFAULT_WEIGHTS,
    DISTANCE_ORDERS,
)
from iqa_cli.train.labels import LabelMap, paper_1to5
from iqa_cli.train.metrics import METRIC_NAMES, compute_metrics, pearson, spearman
from iqa_cli.train.recipes import register_recipe
from iqa_cli.train.recipes.base import BaseParams, Recipe, TrainBatch, Views
from iqa_cli.train.recipes.esnthere import esnthere_optimizer, esnthere_schedule
from iqa_cli.train.schedule import PhasePlateau

if TYPE_CHECKING:  # torch is imported where it is used, so option parsing stays light
    import torch
    from torch import nn

    from iqa_cli.train.data import SplitParts
    from iqa_cli.train.engine import FitContext, FitResult

STAGES = ("prompts", "fine-tune")
POOLS = ("train", "all")
METRICS = ("heads_plcc_srcc", "srcc", "plcc", "plcc_logistic", "krcc")
CLIP_WEIGHTS = "clip_vit_b16_openai_st"
SCORE_HEAD = 2


@dataclass
class ALIQAParams(BaseParams):
    epochs: int = field(
        default=2000, metadata={"help": "epoch cap of each round and of the fine-tune step (stops at lr < min_lr)"}
    )
    batch_size: int = field(default=192, metadata={"help": "training batch size of the rounds (global over ranks)"})
    eval_batch_size: int = field(default=256, metadata={"help": "evaluation batch size (per rank)"})
    selection_metric: str = field(
        default="heads_plcc_srcc",
        metadata={"help": "kept-model metric: heads_plcc_srcc (mean PLCC + mean SRCC of the 3 heads), srcc, plcc, ..."},
    )
    label_scale: str = field(
        default="paper",
        metadata={"help": "training label scale: paper (the VT-IQA/IEIT/AL-IQA 1-5 mapping) or range (to 1-5)"},
    )
    pretrained: str | None = field(
        default=CLIP_WEIGHTS,
        metadata={"help": "CLIP ViT-B/16 weights: a weights-store name or file, or none for random init"},
    )
    budget: float = field(default=25.0, metadata={"help": "labelling budget, percent of the pool (5, 10, 25, 80)"})
    round_shares: tuple[int, ...] = field(
        default=DEFAULT_SHARES, metadata={"help": "how the budget splits over the rounds (1,2,2: 5+10+10 for 25 %)"}
    )
    band_starts: tuple[float, ...] = field(
        default=DEFAULT_BAND_STARTS, metadata={"help": "start of each round's uncertainty band (share of the pool)"}
    )
    borda_weights: tuple[float, ...] = field(
        default=DEFAULT_WEIGHTS, metadata={"help": "weight of the representativeness rank in each round"}
    )
    round_n_ctx: tuple[int, ...] = field(
        default=(4, 8, 8), metadata={"help": "prompt context length of each round's fresh prompts"}
    )
    authors_counts: bool = field(
        default=True, metadata={"help": "round 1 picks len(arange(N - N*f, N)) images (59 of 1169 at 5 %)"}
    )
    fine_tune: bool = field(default=True, metadata={"help": "finish with the encoder fine-tuning step"})
    pool: str = field(
        default="train",
        metadata={
            "help": "train (the split's training part; its test part stays unseen) or all (the authors' protocol: "
            "the whole dataset is the pool and the images not selected are the test set that also picks the "
            "kept model, so it needs --select-on test; optimistic)"
        },
    )
    distances: str | None = field(
        default=None,
        metadata={"help": "distances to distilled images (.mat/.npy/.npz, (repeats, K, N)); none: k-means stand-in"},
    )
    distance_key: str = field(default="distance", metadata={"help": "variable of the distance file"})
    distance_order: str = field(
        default="dataset",
        metadata={
            "help": "column order of the distance file: dataset, or authors (the authors' cache order [X; Xtest])"
        },
    )
    distill_images: int = field(default=50, metadata={"help": "stand-in: k-means centroids per repeat"})
    distill_repeats: int = field(default=5, metadata={"help": "stand-in: seeded k-means repeats"})
    distance_keep: int = field(
        default=DEFAULT_KEEP, metadata={"help": "repeated distances kept (closest to their mean) and summed"}
    )
    momentum: float = field(default=0.0, metadata={"help": "SGD momentum"})
    weight_decay: float = field(default=1e-4, metadata={"help": "weight decay"})
    lr_phases: tuple[tuple[int, float], ...] = field(
        default=((0, 0.001), (11, 0.003), (21, 0.01)),
        metadata={"help": "round learning rate by first epoch, e.g. 0:0.001,11:0.003,21:0.01"},
    )
    ft_lr_phases: tuple[tuple[int, float], ...] = field(
        default=((0, 0.001),), metadata={"help": "fine-tune learning rate by first epoch"}
    )
    ft_batch_size: int = field(default=128, metadata={"help": "training batch size of the fine-tune step"})
    eval_period: int = field(default=5, metadata={"help": "evaluate every N epochs (the plateau counts evaluations)"})
    patience: int = field(default=5, metadata={"help": "plateau: evaluations without improvement before a decay"})
    plateau_after: int = field(default=10, metadata={"help": "plateau rule active only after this epoch"})
    lr_factor: float = field(default=0.3, metadata={"help": "plateau: lr multiplier (after reloading the best model)"})
    min_lr: float = field(default=5e-5, metadata={"help": "stop when the learning rate falls below this"})
    global_source: int = field(default=244, metadata={"help": "side of the square resize the crops come from"})
    crop_size: int = field(default=224, metadata={"help": "network input side"})


TINY = {
    "pretrained": None,
    "global_source": 40,
    "crop_size": 32,
    "batch_size": 16,
    "ft_batch_size": 16,
    "eval_batch_size": 64,
    "distill_images": 8,
}


def soft_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over heads of -mean(q log p_first + (1 - q) log p_second), q = (target - 1) / 4 clipped to [0, 1].

    `logits` is (heads, B, 2); `target` (B,) on the 1-5 scale."""
    import torch

    log_p = torch.log_softmax(logits.float(), dim=-1)
    q = ((target.float() - 1.0) / 4.0).clamp(0.0, 1.0)
    per_head = -(q * log_p[..., 0] + (1.0 - q) * log_p[..., 1]).mean(dim=-1)
    return per_head.sum()


def head_metrics(heads: np.ndarray, labels: np.ndarray, score_head: int = SCORE_HEAD) -> dict[str, Any]:
    """Metrics of the scoring head (as 1 + 4p) plus the authors' selection metric over all heads."""
    metrics = compute_metrics(1.0 + 4.0 * heads[:, score_head], labels).as_dict()
    plcc = [pearson(heads[:, k], labels) for k in range(heads.shape[1])]
    srcc = [spearman(heads[:, k], labels) for k in range(heads.shape[1])]
    metrics["heads_plcc"] = float(np.mean(plcc))
    metrics["heads_srcc"] = float(np.mean(srcc))
    metrics["heads_plcc_srcc"] = metrics["heads_plcc"] + metrics["heads_srcc"]
    return metrics


def with_context_length(model: nn.Module, n_ctx: int) -> nn.Module:
    """Replace every prompt learner by a fresh one with `n_ctx` context tokens (same class names)."""
    for k, learner in enumerate(model.prompt_learners):
        if learner.n_ctx != n_ctx:
            model.add_module(f"prompt_learner{k}", model.make_prompt_learner(learner.classnames, n_ctx=n_ctx))
    return model


@register_recipe
class ALIQARecipe(Recipe):
    """The registered recipe is the one `iqa eval`/`predict` use; `for_step` makes the per-round variants."""

    name = "aliqa"
    title = "AL-IQA (Song et al., TCSVT 2023)"
    Params = ALIQAParams
    tiny_params = TINY
    reseed_per_batch = True  # the authors re-seed torch per batch (the crop offsets and flip)
    # Head 2's correlations (what the authors' release test scripts print) next to the mean over the
    # three heads (what their training scripts print and select on).
    metric_names = (*METRIC_NAMES, "heads_srcc", "heads_plcc")
    report_metrics = ("srcc", "plcc", "heads_srcc", "heads_plcc", "krcc")

    def __init__(self, stage: str = "prompts", n_ctx: int = 8, init_from: Path | None = None) -> None:
        if stage not in STAGES:
            raise ConfigError(f"unknown AL-IQA stage '{stage}' (known: {', '.join(STAGES)})")
        self.stage, self.n_ctx, self.init_from = stage, n_ctx, init_from

    def for_step(self, stage: str, n_ctx: int, init_from: Path | None = None) -> ALIQARecipe:
        return type(self)(stage, n_ctx, init_from)

    # ------------------------------------------------------------------------------- parameters

    def check_params(self, params: ALIQAParams) -> None:  # type: ignore[override]
        from iqa_cli.train.al.selection import round_plan_for

        for name, value, allowed in (
            ("selection_metric", params.selection_metric, METRICS),
            ("distance_order", params.distance_order, (*DISTANCE_ORDERS, "esnthere")),
            ("label_scale", params.label_scale, ("paper", "range")),
            ("pool", params.pool, POOLS),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got '{value}'")
        # the plan's own checks (lengths, ranges) on a pool large enough for any budget
        round_plan_for(10**6, params)
        if len(params.round_n_ctx) != len(params.round_shares) or min(params.round_n_ctx) < 1:
            raise ConfigError(f"round_n_ctx needs one positive context length per round, got {params.round_n_ctx}")
        for name in ("distill_images", "distill_repeats", "distance_keep", "eval_period", "ft_batch_size"):
            if getattr(params, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(params, name)}")
        if params.distances is None and params.distance_keep > params.distill_repeats:
            raise ConfigError(
                f"distance_keep ({params.distance_keep}) exceeds distill_repeats ({params.distill_repeats})"
            )
        if params.global_source < params.crop_size:
            raise ConfigError(f"global_source ({params.global_source}) is smaller than crop_size ({params.crop_size})")
        for name in ("lr_phases", "ft_lr_phases"):
            value = getattr(params, name)
            if not value or value[0][0] != 0 or list(value) != sorted(value):
                raise ConfigError(f"{name} must start at epoch 0 and be sorted by epoch (e.g. 0:0.001,11:0.003)")

    def model_name(self, params: ALIQAParams) -> str:  # type: ignore[override]
        return "aliqa"

    def build_model(self, params: ALIQAParams, *, tiny: bool, pretrained: bool) -> nn.Module:  # type: ignore[override]
        from iqa_cli.models import create

        model = create("aliqa", tiny=tiny, n_ctx=self.n_ctx, image_size=params.crop_size)
        if pretrained and params.pretrained:
            from iqa_cli.models.aliqa import load_clip_weights
            from iqa_cli.weights.resolve import resolve_weights

            load_clip_weights(model, resolve_weights(params.pretrained))
        return model

    def load_weights(self, model: nn.Module, files: Mapping[str, Path], params: ALIQAParams) -> None:  # type: ignore[override]
        """Our checkpoints or the authors' release; prompt learners follow the file's context length."""
        from iqa_cli.models import load_checkpoint
        from iqa_cli.models.checkpoint import read_state_dict

        state, _ = read_state_dict(files["model"])
        ctx = state.get("prompt_learner0.ctx")
        if ctx is not None and ctx.dim() == 2:
            with_context_length(model, int(ctx.shape[0]))
        del state
        load_checkpoint(model, files["model"])

    def initialize(self, model: nn.Module, params: ALIQAParams, *, split: str, meta: Mapping[str, Any]) -> None:  # type: ignore[override]
        if self.init_from is not None:  # the fine-tune step starts from round 3's kept model
            self.load_weights(model, {"model": self.init_from}, params)

    # ------------------------------------------------------------------------------------ views

    def view_shapes(self, params: ALIQAParams) -> dict[str, tuple[int, ...]]:  # type: ignore[override]
        return {"global": (3, params.global_source, params.global_source)}

    def stored_views(self, images: list[torch.Tensor], params: ALIQAParams) -> Views:  # type: ignore[override]
        from iqa_cli.train.augment import resize_square

        return {"global": resize_square(images, params.global_source)}

    def train_inputs(self, views: Views, seed: int, params: ALIQAParams) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        from iqa_cli.train.augment import batch_crop_flip, imagenet_normalize

        return (imagenet_normalize(batch_crop_flip(views["global"], params.crop_size, seed)),)

    def eval_inputs(self, views: Views, params: ALIQAParams) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        from iqa_cli.models.vtiqa import global_view
        from iqa_cli.train.augment import imagenet_normalize

        offset = (views["global"].shape[-1] - params.crop_size) // 2
        return (imagenet_normalize(global_view(views["global"], offset, offset, params.crop_size)),)

    def label_map(self, attrs: Mapping[str, Any], params: ALIQAParams) -> LabelMap:  # type: ignore[override]
        """The esnthere 1-5 mappings, with CID2013 read as Y/25 + 1 as AL-IQA's test scripts do."""
        if params.label_scale == "paper":
            return paper_1to5(attrs, method="aliqa")
        return super().label_map(attrs, params)

    def eval_outputs(self) -> Any:
        """All three heads: the authors' headline metric is the mean of the heads' correlations."""
        from iqa_cli.train.al.signals import Outputs, all_heads

        return Outputs(self, all_heads)

    def outputs_metrics(
        self, outputs: np.ndarray, labels: np.ndarray, params: ALIQAParams
    ) -> tuple[dict[str, Any], np.ndarray]:  # type: ignore[override]
        return head_metrics(outputs, labels, SCORE_HEAD), 1.0 + 4.0 * outputs[:, SCORE_HEAD]

    def predict(self, model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        from iqa_cli.models.aliqa import positive_probability

        logits = model(*inputs)
        return 1.0 + 4.0 * positive_probability(logits[model.score_head].float())

    # ------------------------------------------------------------------------------ optimisation

    def loss(self, pred: torch.Tensor, target: torch.Tensor, params: ALIQAParams) -> torch.Tensor:  # type: ignore[override]
        return soft_bce(pred, target)

    def training_loss(self, module: nn.Module, batch: TrainBatch, params: ALIQAParams) -> torch.Tensor:  # type: ignore[override]
        import torch

        (image,) = self.train_inputs(batch.views, batch.seed, params)
        logits = torch.stack([head.float() for head in module(image)])
        return self.loss(logits, batch.target[: batch.size], params)

    def configure_epoch(self, model: nn.Module, epoch: int, params: ALIQAParams) -> None:  # type: ignore[override]
        model.set_trainable(self.stage)

    def make_optimizer(self, model: nn.Module, params: ALIQAParams) -> torch.optim.Optimizer:  # type: ignore[override]
        model.set_trainable(self.stage)
        trainable = [p for p in model.parameters() if p.requires_grad]
        return esnthere_optimizer(trainable, params, self.phases(params)[0][1])

    def phases(self, params: ALIQAParams) -> tuple[tuple[int, float], ...]:
        return params.ft_lr_phases if self.stage == "fine-tune" else params.lr_phases

    def make_schedule(self, params: ALIQAParams) -> PhasePlateau:  # type: ignore[override]
        return esnthere_schedule(self.phases(params), params, last_phase_count=None)

    # ---------------------------------------------------------------------------------- rounds

    def fit(self, ctx: FitContext, parts: SplitParts, out_dir: Path, *, resume: bool) -> FitResult:
        from iqa_cli.train.al.rounds import fit_rounds

        return fit_rounds(ctx, parts, out_dir, resume=resume)
