"""SSL-IQA (Nano-cd/SSL_IQA): the ResNet-101 teacher and the AlexNet student, each a 5-bin rating head.

Both branches follow the authors' `model_hub` layout, so their key names are the authors' names:
`base` is the torchvision backbone's children without its last two (pool and classifier), `avg_pool`
is a global average pool, and `fc` ends in a Softmax over the 5 rating categories. Each branch returns
`(prob, activation)`: the rating distribution and the pooled backbone feature (the feature the
relational distillation loss compares). The quality score is the expectation sum_k k * p_k, k = 1..5.

Backbones are built with `weights=None` (never downloaded); ImageNet weights come from the local
weights store through `load_backbone_weights`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torchvision
from torch import nn

from iqa_cli.errors import CheckpointError, ConfigError
from iqa_cli.models.checkpoint import mismatch_report, read_state_dict, unwrap_state_dict
from iqa_cli.models.registry import register_model

NUM_BINS = 5
TEACHER_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
TEACHER_HEAD = (1024, 512, 256)  # the authors' Resnet_101 head widths
STUDENT_HIDDEN = 128  # the authors' Alex_net head width


def expected_score(prob: torch.Tensor) -> torch.Tensor:
    """Mean opinion score as the expectation of the rating distribution: prob @ [1, 2, ..., K]."""
    bins = torch.arange(1, prob.shape[1] + 1, dtype=prob.dtype, device=prob.device)
    return prob @ bins


def _backbone_children(net: nn.Module) -> tuple[list[str], nn.Sequential]:
    """The authors' `base`: every child of a torchvision classifier except the last two."""
    names = [name for name, _ in net.named_children()][:-2]
    return names, nn.Sequential(*[getattr(net, name) for name in names])


class SSLBranch(nn.Module):
    """base -> global average pool -> fc head ending in Softmax; forward returns (prob, activation)."""

    base: nn.Sequential
    fc: nn.Sequential

    def __init__(self) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.backbone_names: list[str] = []  # torchvision child names behind base.0, base.1, ...

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled backbone feature (B, C): the `activation` the distillation loss uses."""
        return torch.flatten(self.avg_pool(self.base(x)), 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        activation = self.features(x)
        return self.fc(activation), activation

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted MOS on the 1..5 scale, shape (B,)."""
        return expected_score(self(x)[0])


class SSLTeacher(SSLBranch):
    """The authors' `Resnet_101`: ResNet trunk, head Linear-Linear-Linear-ReLU-Linear-Softmax.

    There is no nonlinearity between the first three Linear layers, as in the authors' file.
    `arch` other than 'resnet101' (e.g. 'resnet18' for CPU tests) is NOT a configuration the
    authors used; `head_dims` other than (1024, 512, 256) is not either.
    """

    def __init__(
        self, arch: str = "resnet101", num_classes: int = NUM_BINS, head_dims: Sequence[int] = TEACHER_HEAD
    ) -> None:
        super().__init__()
        if arch not in TEACHER_ARCHS:
            raise ConfigError(f"unknown SSL-IQA teacher arch '{arch}' (known: {', '.join(TEACHER_ARCHS)})")
        if len(head_dims) != 3:
            raise ConfigError(f"SSL-IQA teacher head_dims needs 3 widths, got {list(head_dims)}")
        self.arch = arch
        net = getattr(torchvision.models, arch)(weights=None)
        width = net.fc.in_features
        self.backbone_names, self.base = _backbone_children(net)
        h1, h2, h3 = (int(d) for d in head_dims)
        self.fc = nn.Sequential(
            nn.Linear(width, h1),
            nn.Linear(h1, h2),
            nn.Linear(h2, h3),
            nn.ReLU(),
            nn.Linear(h3, num_classes),
            nn.Softmax(dim=1),
        )


class SSLStudent(SSLBranch):
    """The authors' `Alex_net`: AlexNet `features` only, head Linear-ReLU-Linear-Softmax."""

    def __init__(self, num_classes: int = NUM_BINS, hidden: int = STUDENT_HIDDEN) -> None:
        super().__init__()
        # AlexNet's children are (features, avgpool, classifier): only `features` survives, as base.0.
        # Its 58M-parameter classifier is dropped, so build it on the meta device (no memory, no init
        # time) and materialise the features alone; torchvision initialises AlexNet's convs with
        # PyTorch's defaults, which reset_parameters() reproduces.
        with torch.device("meta"):
            net = torchvision.models.alexnet(weights=None)
        net.features.to_empty(device=torch.get_default_device())
        for module in net.features.modules():
            if isinstance(module, nn.Conv2d):
                module.reset_parameters()
        self.backbone_names, self.base = _backbone_children(net)
        width = net.features[-3].out_channels  # last conv before the final ReLU and MaxPool
        self.fc = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes), nn.Softmax(dim=1))


class PairOutputs(NamedTuple):
    """One training step's forward of both branches: (prob, activation) of each branch on the labelled
    batch, and on the unlabelled batch (None when there is none). The teacher's unlabelled outputs
    are computed without gradient: they are only ever targets."""

    student_labelled: tuple[torch.Tensor, torch.Tensor]
    teacher_labelled: tuple[torch.Tensor, torch.Tensor]
    student_unlabelled: tuple[torch.Tensor, torch.Tensor] | None
    teacher_unlabelled: tuple[torch.Tensor, torch.Tensor] | None


PAIR_MODES = ("student", "teacher", "train")


class SSLIQAPair(nn.Module):
    """Student and teacher together, for semi-supervised training; forward and score use the student.

    `forward(x)` is the student's (prob, activation); `forward(x, mode="teacher")` the teacher's; and
    `forward(x_labelled, x_unlabelled, mode="train")` runs both branches on both batches in one call
    (so a DDP wrapper sees every parameter), returning `PairOutputs`. Each branch sees the labelled and
    the unlabelled batch in separate calls, as the authors' script calls each model per loader, so
    BatchNorm statistics are per batch. The authors' training script saves only the student.
    """

    def __init__(self, teacher: dict[str, Any] | None = None, student: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.student = SSLStudent(**(student or {}))
        self.teacher = SSLTeacher(**(teacher or {}))

    def forward(
        self, x: torch.Tensor, unlabelled: torch.Tensor | None = None, *, mode: str = "student"
    ) -> tuple[torch.Tensor, torch.Tensor] | PairOutputs:
        if mode == "student":
            return self.student(x)
        if mode == "teacher":
            return self.teacher(x)
        if mode != "train":
            raise ConfigError(f"unknown SSL-IQA pair mode '{mode}' (known: {', '.join(PAIR_MODES)})")
        student_labelled, teacher_labelled = self.student(x), self.teacher(x)
        if unlabelled is None or unlabelled.shape[0] == 0:
            return PairOutputs(student_labelled, teacher_labelled, None, None)
        student_unlabelled = self.student(unlabelled)
        with torch.no_grad():
            teacher_unlabelled = self.teacher(unlabelled)
        return PairOutputs(student_labelled, teacher_labelled, student_unlabelled, teacher_unlabelled)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.student.score(x)


def torchvision_to_base(state: Mapping[str, torch.Tensor], backbone_names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Rename a torchvision classifier's state dict (`conv1.*`, `layer1.*`, `features.*`) to `base.<i>.*`.

    Keys outside the kept children (the ImageNet classifier, `fc.*`/`classifier.*`) are dropped.
    """
    index = {name: i for i, name in enumerate(backbone_names)}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head in index:
            out[f"base.{index[head]}.{rest}"] = value
    return out


def load_backbone_weights(branch: SSLBranch, source: str | Path | Mapping[str, Any]) -> SSLBranch:
    """Load torchvision ImageNet weights (a file from the weights store, or a state dict) into `branch.base`.

    This is what the authors' `pretrained=True` gives; the head keeps its initialisation.
    """
    if isinstance(source, (str, Path)):
        state, _ = read_state_dict(source)
    else:
        state = unwrap_state_dict(source)
    base_state = torchvision_to_base(state, branch.backbone_names)
    expected = {k: v for k, v in branch.state_dict().items() if k.startswith("base.")}
    report = mismatch_report(expected, base_state)
    if report:
        where = source if isinstance(source, (str, Path)) else None
        raise CheckpointError(f"backbone weights do not fit the SSL-IQA backbone: {report}", path=where)
    branch.base.load_state_dict({k[len("base.") :]: v for k, v in base_state.items()})
    return branch


TINY_TEACHER = {"arch": "resnet18", "head_dims": (64, 32, 16)}


@register_model(
    "ssliqa-teacher",
    description="SSL-IQA teacher: ResNet-101 trunk, 5-bin rating distribution head (score = expectation)",
    inputs="(B,3,224,224) ImageNet-normalised; returns (prob (B,5), activation (B,2048))",
    tiny_config=TINY_TEACHER,
)
def build_ssliqa_teacher(**config: Any) -> SSLTeacher:
    return SSLTeacher(**config)


@register_model(
    "ssliqa-student",
    description="SSL-IQA student: AlexNet features, 5-bin rating distribution head (score = expectation)",
    inputs="(B,3,224,224) ImageNet-normalised; returns (prob (B,5), activation (B,256))",
)
def build_ssliqa_student(**config: Any) -> SSLStudent:
    return SSLStudent(**config)


@register_model(
    "ssliqa",
    description="SSL-IQA student and teacher together (semi-supervised training); forward/score use the student",
    inputs="(B,3,224,224) ImageNet-normalised; returns the student's (prob (B,5), activation (B,256))",
    tiny_config={"teacher": TINY_TEACHER},
)
def build_ssliqa(**config: Any) -> SSLIQAPair:
    return SSLIQAPair(**config)
