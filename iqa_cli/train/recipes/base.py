"""The `Recipe` interface: everything method-specific about training and evaluating a model.

The engine (`iqa_cli.train.engine`) owns the loop, devices, precision, DDP, checkpoints, logging and
resumption; a recipe says what to build and how to feed it:

* `Params`: a dataclass of hyper-parameters whose defaults are the method's published protocol
  (each field becomes a `iqa train <method>` flag and a TOML key; `metadata["help"]` is its help text);
  `tiny_params` are the overrides of `--tiny` (CPU test size).
* views: `stored_views` turns each decoded image (uint8, any size) into the fixed-size uint8 arrays
  the method works from (e.g. VT-IQA's 244 and 768 px resizes); they may be computed once per run and
  kept in RAM. `train_inputs` / `eval_inputs` build the network inputs from a batch of those on the
  device (crops, flips, mosaics, normalisation).
* `loss`, `configure_epoch` (freezing), `make_optimizer`, `make_schedule`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from iqa_cli.train.labels import LABEL_SCALES, LabelMap
from iqa_cli.train.schedule import Schedule

if TYPE_CHECKING:  # torch is imported where it is used, so option parsing stays light
    import torch
    from torch import nn

Views = dict  # name -> uint8 tensor batch (n, ...)


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


class Recipe(ABC):
    """One method's training/evaluation protocol. Subclasses are registered by name."""

    name: ClassVar[str]
    title: ClassVar[str]
    Params: ClassVar[type[BaseParams]] = BaseParams
    tiny_params: ClassVar[dict[str, Any]] = {}
    # Re-seed torch before every batch from (epoch, batch), as the esnthere scripts do: augmentation
    # and dropout then depend only on the position in training.
    reseed_per_batch: ClassVar[bool] = False
    channels_last_helps: ClassVar[bool] = False

    # ---------------------------------------------------------------- parameters and model

    def check_training(self, params: BaseParams) -> None:
        """Raise ConfigError when these parameters cannot be trained (e.g. eval-only variants)."""
        return None

    def check_params(self, params: BaseParams) -> None:
        """Raise ConfigError for inconsistent parameters."""
        return None

    @abstractmethod
    def model_name(self, params: BaseParams) -> str:
        """Model-registry name of the network these parameters build (recorded in checkpoints)."""

    @abstractmethod
    def build_model(self, params: BaseParams, *, tiny: bool, pretrained: bool) -> nn.Module:
        """The network; `pretrained=True` loads the protocol's initial weights (training start)."""

    def label_map(self, attrs: Mapping[str, Any], params: BaseParams) -> LabelMap:
        return LABEL_SCALES[params.label_scale](attrs)

    def weight_files(self, weights: str, variant: str | None) -> dict[str, Path]:
        """Files behind `--weights` (a path or a weights-store name); {'model': file} unless a method
        ships several files per model."""
        from iqa_cli.weights.resolve import resolve_weights

        return {"model": resolve_weights(weights)}

    def default_weights(self, variant: str | None) -> str | None:
        """Weights to evaluate when none are named and no local run is wanted (e.g. a release that is
        the only source of a variant); None: use the newest local run."""
        return None

    def load_weights(self, model: nn.Module, files: Mapping[str, Path], params: BaseParams) -> None:
        """Load `weight_files` into a freshly built network (names and shapes are checked)."""
        from iqa_cli.models.checkpoint import load_checkpoint

        load_checkpoint(model, files["model"])

    def eval_needs_grad(self, params: BaseParams) -> bool:
        """True when inference itself back-propagates (e.g. gradient-based patch selection)."""
        return False

    # ---------------------------------------------------------------- views

    @abstractmethod
    def view_shapes(self, params: BaseParams) -> dict[str, tuple[int, ...]]:
        """Shape of each stored view of one image (uint8), used to budget RAM."""

    @abstractmethod
    def stored_views(self, images: list[torch.Tensor], params: BaseParams) -> Views:
        """uint8 (3, h, w) images of any sizes on the device -> dict of uint8 (n, ...) batches."""

    @abstractmethod
    def train_inputs(self, views: Views, seed: int, params: BaseParams) -> tuple[torch.Tensor, ...]:
        """Network inputs of one training batch; `seed` identifies the batch (epoch, index, run seed)."""

    @abstractmethod
    def eval_inputs(self, views: Views, params: BaseParams) -> tuple[torch.Tensor, ...]:
        """Network inputs at test time (the method's test-time protocol)."""

    def predict(self, model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Scores (B,) from network inputs."""
        return model(*inputs).reshape(-1)

    # ---------------------------------------------------------------- optimisation

    @abstractmethod
    def loss(self, pred: torch.Tensor, target: torch.Tensor, params: BaseParams) -> torch.Tensor: ...

    def configure_epoch(self, model: nn.Module, epoch: int, params: BaseParams) -> None:
        """Set `requires_grad` for this epoch (freezing phases); default: everything trains."""
        model.requires_grad_(True)

    @abstractmethod
    def make_optimizer(self, model: nn.Module, params: BaseParams) -> torch.optim.Optimizer: ...

    @abstractmethod
    def make_schedule(self, params: BaseParams) -> Schedule: ...
