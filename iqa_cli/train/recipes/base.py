"""The `Recipe` interface: everything method-specific about training and evaluating a model.

The engine (`iqa_cli.train.engine`) owns the loop, devices, precision, DDP, checkpoints, logging and
resumption; a recipe says what to build and how to feed it:

* `Params`: a dataclass of hyper-parameters whose defaults are the method's published protocol
  (each field becomes a `iqa train <method>` flag and a TOML key; `metadata["help"]` is its help text);
  `tiny_params` are the overrides of `--tiny` (CPU test size).
* views: `stored_views` turns each decoded image (uint8, any size) into the fixed-size uint8 arrays
  the method works from (e.g. VT-IQA's 244 and 768 px resizes); they may be computed once per run and
  kept in RAM. `train_inputs` / `eval_inputs` build the network inputs from a batch of those on the
  device (crops, flips, mosaics, normalisation); `cut_train_views` may cut a training batch's crops
  from the preloaded arrays instead, so only the pixels used are copied and sent to the device, and
  `scoring_views` may make only the pixels `eval_inputs` reads for images that are only scored.
* `loss`, `configure_epoch` (freezing), `make_optimizer`, `make_schedule`.

Hooks with defaults, for methods whose training is more than "views -> network -> loss":

* data: `wrap_dataset` (e.g. pair each image with its enhanced copy), `labels` (training targets;
  e.g. distortion classes instead of scores), `train_pool` (what one epoch iterates, e.g. every
  image repeated once per training patch), `batch_extra` (more rows loaded with each batch, e.g.
  unlabelled images or a low-quality partner; a pure function of the batch's position, so resumed
  runs see the same rows);
* step: `training_loss(module, batch)` (default: `train_inputs` -> forward -> `loss`). `module` may
  be wrapped by DDP or torch.compile: call it, never reach into its attributes, so every trainable
  parameter is seen by the wrapper's forward;
* `initialize` (start weights that depend on the split, e.g. IEIT stage 2 from stage 1), `metrics`
  / `metric_names` / `report_metrics` (what is measured and shown), and `fit` (one split's whole
  training, for multi-round methods such as active learning; default None: the engine's one `Trainer`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeAlias, TypeVar

import numpy as np

from iqa_cli.errors import ConfigError
from iqa_cli.train.labels import LABEL_SCALES, LabelMap, check_quality_scores, directed
from iqa_cli.train.metrics import METRIC_NAMES, MIN_CORRELATION_IMAGES, compute_metrics
from iqa_cli.train.schedule import Schedule

if TYPE_CHECKING:  # torch is imported where it is used, so option parsing stays light
    import torch
    from torch import nn

    from iqa_cli.train.data import DatasetLike, SplitParts
    from iqa_cli.train.engine import FitContext, FitResult

Views: TypeAlias = "dict[str, torch.Tensor]"  # name -> uint8 tensor batch (n, ...)
REPORT_METRICS = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")


@dataclass
class TrainBatch:
    """One training step's data on the device.

    `views` and `target` hold `size` rows of the batch proper, followed by the rows `batch_extra`
    asked for (if any). `seed` identifies the batch (run seed, epoch, index) and drives its
    augmentation.
    """

    views: Views
    target: torch.Tensor
    size: int
    seed: int
    epoch: int
    index: int
    channels_last: bool = False

    def layout(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Network inputs in the memory format the engine chose (channels-last for CNNs on GPU)."""
        import torch

        if not self.channels_last:
            return inputs
        return tuple(x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x for x in inputs)


@dataclass
class BaseParams:
    """Fields every recipe has; recipes subclass this with their own."""

    epochs: int = field(default=100, metadata={"help": "maximum number of epochs"})
    batch_size: int = field(default=32, metadata={"help": "training batch size (global, over all DDP ranks)"})
    eval_batch_size: int = field(default=64, metadata={"help": "evaluation batch size (per rank)"})
    selection_metric: str = field(
        default="plcc", metadata={"help": "metric that picks the kept model: srcc, plcc, plcc_logistic or krcc"}
    )
    label_scale: str = field(
        default="paper",
        metadata={"help": "training label scale: paper (the method's mapping), range (declared range to 1-5), native"},
    )


P = TypeVar("P", bound=BaseParams)


class Recipe(ABC, Generic[P]):
    """One method's training/evaluation protocol, generic in its parameters dataclass `P` (whose class
    is also `Params`), so a subclass's methods take its own parameters. Subclasses are registered by name."""

    name: ClassVar[str]
    title: ClassVar[str]
    Params: ClassVar[type[BaseParams]] = BaseParams
    tiny_params: ClassVar[dict[str, Any]] = {}
    # Re-seed torch before every batch from (epoch, batch), as the esnthere scripts do: augmentation
    # and dropout then depend only on the position in training.
    reseed_per_batch: ClassVar[bool] = False
    channels_last_helps: ClassVar[bool] = False
    # What `metrics` returns (each a float, summarised by the median over splits), and the columns
    # the CLI tables show; the first two also go into the per-epoch progress line.
    metric_names: ClassVar[tuple[str, ...]] = METRIC_NAMES
    report_metrics: ClassVar[tuple[str, ...]] = REPORT_METRICS
    # The fewest images a test part may hold: correlations are +-1 on two (a classifier may test fewer).
    min_test_images: ClassVar[int] = MIN_CORRELATION_IMAGES
    # Trains and tests on subjective quality scores (not a distorted set's levels, see `check_quality_scores`).
    needs_quality_scores: ClassVar[bool] = True
    # Whether a whole-dataset test (`iqa eval --cross`, `--watch`) leaves out the images flagged
    # TRAINING_IMAGE (LIVE Challenge's 7 subject-training images), as the method's authors read that
    # dataset: VT-IQA, IEIT and AL-IQA test on all 1,169 rows; VIPNet drops the first 7.
    cross_skips_training_images: ClassVar[bool] = False
    # Params fields that `iqa eval/predict` may override (test-time protocol choices such as the
    # number of test crops or which branch scores); each becomes a flag of those commands.
    eval_params: ClassVar[tuple[str, ...]] = ()
    # Params fields that scoring image files (`iqa predict`, the Python scorer) may override, each a flag
    # of `iqa predict`; None: the same as `eval_params`. A recipe names its own where an evaluation option
    # reads labels (IEIT's lq_threshold) or an option only applies to files (IEIT's on-the-fly classifier).
    predict_params: ClassVar[tuple[str, ...] | None] = None
    # False when the network keeps tensors no checkpoint holds (non-persistent buffers made at build
    # time): `build_trained` then builds it with its random init instead of skipping it (it also
    # checks, and falls back, whatever this says).
    build_without_init: ClassVar[bool] = True
    # What `iqa predict` and the Python scorer's numbers are (the title of their score column).
    prediction_scale: ClassVar[str] = "training label scale (1-5 for VT-IQA, IEIT, AL-IQA and SSL-IQA)"
    # Predictions are class numbers, named by `prediction_details`, not quality scores (VIPNet's DPM).
    predicts_classes: ClassVar[bool] = False

    @classmethod
    def test_options(cls, *, files: bool = False) -> tuple[str, ...]:
        """The Params fields a test may override: `eval_params`, or for image files `predict_params`."""
        return cls.predict_params if files and cls.predict_params is not None else cls.eval_params

    # ---------------------------------------------------------------- parameters and model

    def check_training(self, params: P) -> None:
        """Raise ConfigError when these parameters cannot be trained (e.g. eval-only variants)."""
        return None

    def check_split_start(self, params: P, meta: Mapping[str, Any], split: str, *, tiny: bool) -> None:
        """Raise before any split trains when `split` (not started yet) could not start: what it starts
        from is missing (IEIT's stage 2 needs a stage-1 model of the split). `meta` is the run's checkpoint
        metadata with this split's `split` and `split_digest`."""
        return None

    def pretraining_seen(self, params: P) -> tuple[np.ndarray, str] | None:
        """The file digests (`seen_files`) of the images a network this method starts from was pretrained
        on, and what that network is (VIPNet's DPM: its distorted images' references); None when no such
        record exists. A test image among them is no unseen image, and the trained model records them as
        seen beside its own training images."""
        return None

    def saved_params(self, saved: dict[str, Any]) -> dict[str, Any]:
        """Parameters read back from a run or checkpoint, with values for fields added since it was
        written where the old behaviour differs from today's default."""
        return saved

    def check_params(self, params: P) -> None:
        """Raise ConfigError for inconsistent parameters."""
        return None

    def idle_params(self, params: P) -> dict[str, str]:
        """Parameters that have no effect with these settings, each with why (a stage that does not use
        it); giving one on the command line is an error rather than a silent no-op."""
        return {}

    def refuse_idle(self, params: P, given: Mapping[str, Any]) -> None:
        """ConfigError for the first of the `given` options (set by the user, in training or at test time)
        that `idle_params` says has no effect with `params`."""
        idle = self.idle_params(params)
        for name, value in given.items():
            if value is not None and name in idle:
                raise ConfigError(f"--{name.replace('_', '-')} has no effect here ({idle[name]}); leave it out")

    @abstractmethod
    def model_name(self, params: P) -> str:
        """Model-registry name of the network these parameters build (recorded in checkpoints)."""

    def imported_params(self, model: str) -> dict[str, Any] | None:
        """The parameters under which this method builds the network `model`, for a checkpoint that names
        only its network (`iqa weights import MODEL FILE` records MODEL); None when it builds no such one."""
        return {} if model == self.name else None

    @abstractmethod
    def build_model(self, params: P, *, tiny: bool, pretrained: bool) -> nn.Module:
        """The network; `pretrained=True` loads the protocol's initial weights (training start)."""

    def label_map(self, attrs: Mapping[str, Any], params: P) -> LabelMap:
        return LABEL_SCALES[params.label_scale](attrs)

    # ---------------------------------------------------------------- data

    def wrap_dataset(self, dataset: DatasetLike, path: Path, params: P) -> DatasetLike:
        """The dataset this method reads (default: the cache as it is)."""
        return dataset

    def step_memory_bytes(self, params: P, *, tiny: bool) -> int | None:
        """A rough upper estimate of the memory one training step takes on this rank's batch (weights,
        gradients, optimizer state and activations), so a step that cannot fit is refused before the
        run starts instead of being killed by the kernel. None: no estimate for this method."""
        return None

    def eval_outputs(self) -> Any | None:
        """For methods whose reported metrics need more than the score (AL-IQA's three heads): what
        `predict_scores` runs instead of the recipe, its per-image outputs handed to `outputs_metrics`.
        Default None: evaluation predicts the score and calls `metrics`."""
        return None

    def outputs_metrics(self, outputs: np.ndarray, labels: np.ndarray, params: P) -> tuple[dict[str, Any], np.ndarray]:
        """(metrics, scores) from the outputs of `eval_outputs`."""
        raise NotImplementedError

    def dataset_params(self, params: P, dataset: DatasetLike) -> P:
        """`params` as used on this dataset: choices the authors made per dataset (e.g. VIPNet's view mode
        for TID2013/KADID-10k) resolved from its attributes. Checkpoints keep the unresolved values, so
        evaluation on another dataset resolves them for that one. Default: unchanged."""
        return params

    def dataset_label_map(self, dataset: DatasetLike, params: P, source: str) -> LabelMap:
        """The label mapping on this cache (default: `label_map` of its attributes); a method whose labels
        depend on what the cache holds (VIPNet: KonIQ's `mos_zscore` column) overrides this."""
        return self.label_map(dataset.attrs, params)

    def directed_label_map(self, dataset: DatasetLike, params: P, source: str) -> LabelMap:
        """`dataset_label_map` with the direction of the values it gives on this cache (`LabelMap.lower_better`)."""
        return directed(self.dataset_label_map(dataset, params, source), dataset.attrs)

    def labels(self, dataset: DatasetLike, params: P, source: str) -> tuple[np.ndarray, LabelMap]:
        """Training targets, one per image, and the mapping from native scores (written to checkpoints)."""
        check_quality_scores(dataset.attrs, source)
        label_map = self.directed_label_map(dataset, params, source)
        return label_map.to_train(label_map.source_scores(dataset, source)), label_map

    def train_targets(self, dataset: DatasetLike, labels: np.ndarray, params: P) -> np.ndarray:
        """What a training batch's `target` holds, one row per image (default: `labels`, the scores the
        metrics compare with); e.g. a rating distribution (n, 5) per image."""
        return labels

    def train_pool(self, parts: SplitParts, params: P) -> np.ndarray:
        """The dataset indices one epoch iterates over, before shuffling (default: the training part)."""
        return parts.train

    def batch_extra(
        self, indices: np.ndarray, *, parts: SplitParts, epoch: int, batch: int, seed: int, params: P
    ) -> np.ndarray | None:
        """Indices of extra rows to load with this batch (after its own rows); None for none.

        `batch` numbers the batch within the epoch, uniquely across DDP ranks. Must depend only on
        its arguments: a resumed run recomputes it."""
        return None

    def weight_files(self, weights: str, variant: str | None) -> dict[str, Path]:
        """Files behind `--weights` (a path or a weights-store name); {'model': file} unless a method
        ships several files per model."""
        from iqa_cli.weights.resolve import resolve_weights

        return {"model": resolve_weights(weights)}

    def default_weights(self, variant: str | None) -> str | None:
        """Weights to evaluate when none are named and no local run is wanted (e.g. a release that is
        the only source of a variant); None: use the newest local run."""
        return None

    def load_weights(self, model: nn.Module, files: Mapping[str, Path], params: P) -> None:
        """Load `weight_files` into a freshly built network (names and shapes are checked)."""
        from iqa_cli.models.checkpoint import load_checkpoint

        load_checkpoint(model, files["model"])

    def initialize(self, model: nn.Module, params: P, *, split: str, meta: Mapping[str, Any]) -> None:
        """Called once on a fresh (not resumed) start, after `build_model`; e.g. load an earlier stage."""
        return None

    def eval_needs_grad(self, params: P) -> bool:
        """True when inference itself back-propagates (e.g. gradient-based patch selection)."""
        return False

    # ---------------------------------------------------------------- views

    @abstractmethod
    def view_shapes(self, params: P) -> dict[str, tuple[int, ...]]:
        """Shape of each stored view of one image (uint8), used to budget RAM."""

    def view_bound(self, params: P) -> int:
        """The largest side any stored view has: an image decoded with both sides at least about this
        large (DRAFT_GAP x, for JPEG DCT scaling) gives the same views as the full decode, near enough
        (`iqa predict` decodes large JPEGs reduced)."""
        from iqa_cli.train.data import view_sides

        return max((side for sides in view_sides(self.view_shapes(params)) for side in sides), default=0)

    @abstractmethod
    def stored_views(self, images: list[torch.Tensor], params: P) -> Views:
        """uint8 (3, h, w) images of any sizes on the device -> dict of uint8 (n, ...) batches."""

    @abstractmethod
    def train_inputs(self, views: Views, seed: int, params: P) -> tuple[torch.Tensor, ...]:
        """Network inputs of one training batch; `seed` identifies the batch (epoch, index, run seed)."""

    def cut_train_views(self, views: Views, rows: torch.Tensor, seed: int, params: P) -> Views | None:
        """Optional: one training batch's views cut from the preloaded arrays (`views`: all images,
        uint8, in host memory, or on the GPU when the views are kept there; `rows`: the batch's rows,
        on the same device), keeping only the pixels `train_inputs` reads, so less is copied and sent
        to the device. `train_inputs` must accept what this returns and give the same inputs as from
        the full views. Default None: the full stored views of the rows."""
        return None

    def scoring_view_shapes(self, params: P) -> dict[str, tuple[int, ...]]:
        """Shapes of `scoring_views` (default: `view_shapes`)."""
        return self.view_shapes(params)

    def scoring_views(self, images: list[torch.Tensor], params: P) -> Views:
        """Optional: the views of images that are only scored (`iqa eval`, `iqa predict`), keeping only
        the pixels `eval_inputs` reads (e.g. VT-IQA's test mosaic instead of its whole 768 px source).
        `eval_inputs` must accept them and give exactly the inputs it makes from `stored_views`.
        Default: `stored_views`."""
        return self.stored_views(images, params)

    @abstractmethod
    def eval_inputs(self, views: Views, params: P) -> tuple[torch.Tensor, ...]:
        """Network inputs at test time (the method's test-time protocol), from `stored_views` or
        `scoring_views`."""

    def predict(self, model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Scores (B,) from network inputs."""
        return model(*inputs).reshape(-1)

    def data_identity(self, dataset: DatasetLike) -> dict[str, str]:
        """What a model's numbers depend on besides the cache's images and labels, as {metadata key: digest}
        (IEIT: the enhanced images beside the cache). Recorded in checkpoints; an evaluation on the model's
        own dataset warns when it differs. Default: nothing."""
        return {}

    def file_params(self, params: P, meta: Mapping[str, str]) -> P:
        """`params` for scoring image files (`iqa predict`, the Python scorer): where the model's training
        dataset set a choice that changes what the network saw (VIPNet's KonIQ scale), image files get it
        too, so a file scores as the same image did in the model's tests. Test-time options given by the
        user are applied after this. Default: unchanged."""
        return params

    def file_scoring_note(self, meta: Mapping[str, str], weights: str) -> str | None:
        """Why scores of image files (`iqa predict`, the Python scorer) are not on the footing of the model's
        tests, from its checkpoint metadata; None when they are."""
        return None

    def dataset_scoring_note(self, meta: Mapping[str, str], dataset: DatasetLike, weights: str) -> str | None:
        """Why scores of `dataset` (as `wrap_dataset` gave it) are not on the footing of the model's training,
        from its checkpoint metadata (inputs beside the images, such as IEIT's enhanced images, made another
        way); None when they are."""
        return None

    def prediction_details(self, scores: np.ndarray) -> list[dict[str, Any]] | None:
        """What each prediction means beyond its number, as named columns, where `predicts_classes`; None for
        a quality score."""
        return None

    def predict_batch(self, model: nn.Module, inputs: tuple[torch.Tensor, ...], params: P) -> torch.Tensor:
        """Scores (B,) of one test batch, for test-time protocols that depend on the parameters (e.g. which
        branch scores, how many crops are averaged). Default: `predict`."""
        return self.predict(model, inputs)

    # ---------------------------------------------------------------- optimisation

    def metrics(self, pred: np.ndarray, labels: np.ndarray, params: P) -> dict[str, Any]:
        """Metrics of predictions against labels (both on the training label scale)."""
        return compute_metrics(pred, labels).as_dict()

    @abstractmethod
    def loss(self, pred: torch.Tensor, target: torch.Tensor, params: P) -> torch.Tensor: ...

    def training_loss(self, module: nn.Module, batch: TrainBatch, params: P) -> torch.Tensor:
        """The loss of one training step (run under autocast by the engine)."""
        inputs = batch.layout(self.train_inputs(batch.views, batch.seed, params))
        return self.loss(module(*inputs).float(), batch.target[: batch.size], params)

    def configure_epoch(self, model: nn.Module, epoch: int, params: P) -> None:
        """Set `requires_grad` for this epoch (freezing phases); default: everything trains."""
        model.requires_grad_(True)

    @abstractmethod
    def make_optimizer(self, model: nn.Module, params: P) -> torch.optim.Optimizer: ...

    def max_grad_norm(self, params: P) -> float | None:
        """Clip the gradient norm (over every optimised parameter) to this before each step; None: no clipping."""
        return None

    @abstractmethod
    def make_schedule(self, params: P) -> Schedule: ...

    # ---------------------------------------------------------------- one split

    def fit(self, ctx: FitContext[P], parts: SplitParts, out_dir: Path, *, resume: bool) -> FitResult | None:
        """Train one split into `out_dir` (its `best.safetensors` is the kept model) when the method's
        training is more than one `Trainer` (e.g. AL-IQA's rounds). Default None: the engine trains the
        split with one `Trainer` (`iqa_cli.train.engine.fit_split`)."""
        return None
