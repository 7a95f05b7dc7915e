"""AL-IQA's hyper-parameters (the defaults are the authors' protocol), apart from the recipe so the
active-learning rounds (`iqa_cli.train.al.rounds`) and the recipe (`iqa_cli.train.recipes.aliqa`)
both read them without importing each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from iqa_cli.train.al.selection import (
    DEFAULT_BAND_STARTS,
    DEFAULT_KEEP,
    DEFAULT_SHARES,
    DEFAULT_WEIGHTS,
)
from iqa_cli.train.config import protocol_default
from iqa_cli.train.recipes.esnthere import Phases, PlateauParams, check_min_lr, check_phases, check_protocol

STAGES = ("prompts", "fine-tune")
Pool = Literal["train", "all"]
Metric = Literal["heads_plcc_srcc", "srcc", "plcc", "plcc_logistic", "krcc"]
DistanceOrder = Literal["dataset", "authors", "esnthere"]  # esnthere: the old name of authors
CLIP_WEIGHTS = "clip_vit_b16_openai_st"


@dataclass
class ALIQAParams(PlateauParams):
    epochs: int = field(
        default=2000, metadata={"help": "epoch cap of each round and of the fine-tune step (stops at lr < min_lr)"}
    )
    batch_size: int = field(default=192, metadata={"help": "training batch size of the rounds (global over ranks)"})
    eval_batch_size: int = field(default=256, metadata={"help": "evaluation batch size (per rank)"})
    selection_metric: Metric = field(
        default="heads_plcc_srcc",
        metadata={"help": "kept-model metric: heads_plcc_srcc (mean PLCC + mean SRCC of the 3 heads), srcc, plcc, ..."},
    )
    label_scale: Literal["paper", "range"] = field(
        default="paper",
        metadata={"help": "training label scale: paper (the VT-IQA/IEIT/AL-IQA 1-5 mapping) or range (to 1-5)"},
    )
    pretrained: str | None = protocol_default(
        PlateauParams,
        "pretrained",
        CLIP_WEIGHTS,
        help="CLIP ViT-B/16 weights: a weights-store name or file, or none for random init",
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
    pool: Pool = field(
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
    # No default: the authors' files (livew_ds.mat) are in their cache order [X; Xtest], a file of yours in the
    # cache's; read the other way, every image gets another image's distances, and nothing could tell.
    distance_order: DistanceOrder | None = field(
        default=None,
        metadata={
            "help": "column order of the --distances file, which needs one: dataset (the cache's order), or authors "
            "(the authors' cache order [X; Xtest], as in livew_ds.mat)"
        },
    )
    distill_images: int = field(default=50, metadata={"help": "stand-in: k-means centroids per repeat"})
    distill_repeats: int = field(default=5, metadata={"help": "stand-in: seeded k-means repeats"})
    distance_keep: int = field(
        default=DEFAULT_KEEP, metadata={"help": "repeated distances kept (closest to their mean) and summed"}
    )
    weight_decay: float = protocol_default(PlateauParams, "weight_decay", 1e-4)
    lr_phases: Phases = protocol_default(
        PlateauParams,
        "lr_phases",
        ((0, 0.001), (11, 0.003), (21, 0.01)),
        help="round learning rate by first epoch, e.g. 0:0.001,11:0.003,21:0.01",
    )
    ft_lr_phases: Phases = field(default=((0, 0.001),), metadata={"help": "fine-tune learning rate by first epoch"})
    ft_batch_size: int = field(default=128, metadata={"help": "training batch size of the fine-tune step"})
    eval_period: int = field(default=5, metadata={"help": "evaluate every N epochs (the plateau counts evaluations)"})
    patience: int = protocol_default(PlateauParams, "patience", 5)
    plateau_after: int = protocol_default(PlateauParams, "plateau_after", 10)


def check_aliqa_protocol(params: ALIQAParams) -> None:
    """The shared protocol's checks, and the fine-tune step's phases."""
    check_protocol(params)
    check_phases("ft_lr_phases", params.ft_lr_phases)
    if params.fine_tune:
        check_min_lr("ft_lr_phases", params.ft_lr_phases, params.min_lr)
