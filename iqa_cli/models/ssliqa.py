"""SSL-IQA (Nano-cd/SSL_IQA): the ResNet-101 teacher and the AlexNet student, each a 5-bin rating head.

Both branches follow the authors' `model_hub` layout, so their key names are the authors' names:
`base` is the torchvision backbone's children without its last two (pool and classifier), `avg_pool`
is a global average pool, and `fc` ends in a Softmax over the 5 rating categories. Each branch returns
`(prob, activation)`: the rating distribution and the pooled backbone feature (the feature the
relational distillation loss compares). The quality score is the expectation sum_k k * p_k, k = 1..5.

The training script pairs them by `--network` (`PAIRS`): `tres` (its default: AlexNet student, TReS
teacher), `alexnet` (AlexNet + ResNet-101, the pair of the released test checkpoint), `inceptionresv2`
(AlexNet + InceptionResNetV2) and `googlenet` (GoogLeNet student + ResNet-101 teacher).

Backbones are built with `weights=None` (never downloaded); ImageNet weights come from the local
weights store through `load_backbone_weights`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torchvision
from torch import nn

from iqa_cli.errors import CheckpointError, ConfigError
from iqa_cli.models.checkpoint import mismatch_report, read_state_dict, unwrap_state_dict
from iqa_cli.models.inception_resnet_v2 import InceptionResNetV2
from iqa_cli.models.registry import register_model
from iqa_cli.models.tres import TReSTeacher

NUM_BINS = 5
TEACHER_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
TEACHER_HEAD = (1024, 512, 256)  # the authors' Resnet_101 head widths
STUDENT_HIDDEN = 128  # the authors' Alex_net head width
WIDE_HEAD = (512, 256)  # the authors' Google_net and Inceptionresnet_v2 head widths


def expected_score(prob: torch.Tensor) -> torch.Tensor:
    """Mean opinion score as the expectation of the rating distribution: prob @ [1, 2, ..., K]."""
    bins = torch.arange(1, prob.shape[1] + 1, dtype=prob.dtype, device=prob.device)
    return prob @ bins


def _backbone_children(net: nn.Module) -> tuple[list[str], nn.Sequential]:
    """The authors' `base`: every child of a torchvision classifier except the last two."""
    names = [name for name, _ in net.named_children()][:-2]
    return names, nn.Sequential(*[getattr(net, name) for name in names])


def rating_head(width: int, dims: Sequence[int], num_classes: int = NUM_BINS) -> nn.Sequential:
    """Linear layers of `dims` with no nonlinearity between them, ReLU, Linear to the bins, Softmax:
    the head shape of the authors' ResNet-101, GoogLeNet and InceptionResNetV2 branches."""
    widths = [width, *(int(d) for d in dims)]
    layers: list[nn.Module] = [nn.Linear(a, b) for a, b in itertools.pairwise(widths)]
    return nn.Sequential(*layers, nn.ReLU(), nn.Linear(widths[-1], num_classes), nn.Softmax(dim=1))


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

    def imagenet_state(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """An ImageNet classifier's state dict in this branch's names (its classifier dropped)."""
        return torchvision_to_base(state, self.backbone_names)


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
        self.fc = rating_head(width, head_dims, num_classes)


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


class SSLGoogLeNet(SSLBranch):
    """The authors' `Google_net`: torchvision GoogLeNet up to its own global pool (`base.16`), head
    Linear-Linear-ReLU-Linear-Softmax. The trunk runs without GoogLeNet's `transform_input` (the
    authors call the children, never `GoogLeNet.forward`) and without the auxiliary heads."""

    def __init__(self, num_classes: int = NUM_BINS, head_dims: Sequence[int] = WIDE_HEAD) -> None:
        super().__init__()
        if len(head_dims) != 2:
            raise ConfigError(f"SSL-IQA GoogLeNet head_dims needs 2 widths, got {list(head_dims)}")
        # init_weights=False, as torchvision's pretrained path builds it before loading the ImageNet file.
        net = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
        self.backbone_names, self.base = _backbone_children(net)
        self.fc = rating_head(net.fc.in_features, head_dims, num_classes)


class SSLInceptionResNetV2(SSLBranch):
    """The authors' `Inceptionresnet_v2`: the Inception-ResNet-v2 trunk (`base.0` .. `base.14`), global
    average pool, Dropout(0.5), head Linear-Linear-ReLU-Linear-Softmax. `width_div`/`repeats` shrink
    the trunk for CPU tests only."""

    def __init__(
        self,
        num_classes: int = NUM_BINS,
        head_dims: Sequence[int] = WIDE_HEAD,
        width_div: int = 1,
        repeats: Sequence[int] = (10, 20, 9),
    ) -> None:
        super().__init__()
        if len(head_dims) != 2:
            raise ConfigError(f"SSL-IQA InceptionResNetV2 head_dims needs 2 widths, got {list(head_dims)}")
        net = InceptionResNetV2(width_div=width_div, repeats=repeats)
        self.backbone_names, self.base = _backbone_children(net)
        self.drop_out = nn.Dropout(0.5)
        self.fc = rating_head(net.feature_dim, head_dims, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.drop_out(self.avg_pool(self.base(x))), 1)


class SSLTReS(TReSTeacher):
    """The authors' TReS teacher (`Tres_modify.Net`, see `iqa_cli.models.tres`) as an SSL-IQA branch."""

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return expected_score(self(x)[0])

    def imagenet_state(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision ResNet ImageNet weights under `model.`, the classifier included (the authors load
        the whole file with strict=True; the classifier is computed but unused)."""
        return {f"model.{key}": value for key, value in state.items()}


Branch = SSLBranch | SSLTReS

# --network of the authors' train_kd_semi.py: (student, teacher) branch builders by name.
BRANCHES: dict[str, Callable[..., Branch]] = {
    "alexnet": SSLStudent,
    "googlenet": SSLGoogLeNet,
    "resnet101": SSLTeacher,
    "inceptionresnetv2": SSLInceptionResNetV2,
    "tres": SSLTReS,
}
PAIRS: dict[str, tuple[str, str]] = {
    "tres": ("alexnet", "tres"),
    "alexnet": ("alexnet", "resnet101"),
    "inceptionresv2": ("alexnet", "inceptionresnetv2"),
    "googlenet": ("googlenet", "resnet101"),
}
DEFAULT_PAIR = "tres"  # the parse_config() default of train_kd_semi.py
# Weights-store names of each branch's ImageNet start weights (what the authors' pretrained=True loads).
IMAGENET_WEIGHTS = {
    "alexnet": "alexnet_tv_in1k",
    "googlenet": "googlenet_tv_in1k",
    "resnet101": "resnet101_tv_in1k",
    "inceptionresnetv2": "inceptionresnetv2_cadene_in1k",
    "tres": "resnet50_tv_in1k",
}
# CPU-test sizes of each branch (not configurations the authors used).
TINY_BRANCHES: dict[str, dict[str, Any]] = {
    "alexnet": {},
    "googlenet": {"head_dims": (32, 16)},
    "resnet101": {"arch": "resnet18", "head_dims": (64, 32, 16)},
    "inceptionresnetv2": {"width_div": 16, "repeats": (1, 1, 1), "head_dims": (32, 16)},
    "tres": {"arch": "resnet18", "nhead": 4, "ff": 16},
}


def build_branch(name: str, *, tiny: bool = False, **config: Any) -> Branch:
    """One SSL-IQA branch by its name in `BRANCHES`."""
    if name not in BRANCHES:
        raise ConfigError(f"unknown SSL-IQA branch '{name}' (known: {', '.join(BRANCHES)})")
    return BRANCHES[name](**{**(TINY_BRANCHES[name] if tiny else {}), **config})


def pair_branches(network: str) -> tuple[str, str]:
    """(student, teacher) branch names of an authors' `--network` value."""
    if network not in PAIRS:
        raise ConfigError(f"unknown SSL-IQA network pair '{network}' (known: {', '.join(PAIRS)})")
    return PAIRS[network]


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

    def __init__(
        self,
        network: str = DEFAULT_PAIR,
        *,
        tiny: bool = False,
        teacher: dict[str, Any] | None = None,
        student: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        student_name, teacher_name = pair_branches(network)
        self.network = network
        self.student = build_branch(student_name, tiny=tiny, **(student or {}))
        self.teacher = build_branch(teacher_name, tiny=tiny, **(teacher or {}))

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


def load_backbone_weights(branch: Branch, source: str | Path | Mapping[str, Any]) -> Branch:
    """Load ImageNet classifier weights (a file from the weights store, or a state dict) into a branch's
    trunk (`base.*`, or TReS's `model.*`).

    This is what the authors' `pretrained=True` gives; the head keeps its initialisation.
    """
    if isinstance(source, (str, Path)):
        state, _ = read_state_dict(source)
    else:
        state = unwrap_state_dict(source)
    prefix = "model." if isinstance(branch, SSLTReS) else "base."
    trunk_state = branch.imagenet_state(state)
    expected = {k: v for k, v in branch.state_dict().items() if k.startswith(prefix)}
    if isinstance(branch, SSLInceptionResNetV2):
        # Cadene's file has 1001 classes (class 0 'background'); the classifier is not part of `base`.
        trunk_state = {k: v for k, v in trunk_state.items() if k.startswith(prefix)}
    report = mismatch_report(expected, trunk_state)
    if report:
        where = source if isinstance(source, (str, Path)) else None
        raise CheckpointError(f"backbone weights do not fit the SSL-IQA backbone: {report}", path=where)
    trunk = branch.model if isinstance(branch, SSLTReS) else branch.base
    trunk.load_state_dict({k[len(prefix) :]: v for k, v in trunk_state.items()})
    return branch


TINY_TEACHER = TINY_BRANCHES["resnet101"]


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
    "ssliqa-tres",
    description="SSL-IQA TReS teacher (train_kd_semi.py default): ResNet-50 stages, L2 pooling, 2-layer encoder",
    inputs="(B,3,224,224) ImageNet-normalised; returns (prob (B,5), activation (B,4096))",
    tiny_config=TINY_BRANCHES["tres"],
)
def build_ssliqa_tres(**config: Any) -> SSLTReS:
    return SSLTReS(**config)


@register_model(
    "ssliqa-inceptionresnetv2",
    description="SSL-IQA InceptionResNetV2 teacher: Inception-ResNet-v2 trunk, 5-bin rating distribution head",
    inputs="(B,3,224,224) ImageNet-normalised; returns (prob (B,5), activation (B,1536))",
    tiny_config=TINY_BRANCHES["inceptionresnetv2"],
)
def build_ssliqa_inceptionresnetv2(**config: Any) -> SSLInceptionResNetV2:
    return SSLInceptionResNetV2(**config)


@register_model(
    "ssliqa-googlenet",
    description="SSL-IQA GoogLeNet student: GoogLeNet trunk, 5-bin rating distribution head",
    inputs="(B,3,224,224) ImageNet-normalised; returns (prob (B,5), activation (B,1024))",
    tiny_config=TINY_BRANCHES["googlenet"],
)
def build_ssliqa_googlenet(**config: Any) -> SSLGoogLeNet:
    return SSLGoogLeNet(**config)


@register_model(
    "ssliqa",
    description="SSL-IQA student and teacher together (semi-supervised training); forward/score use the student",
    inputs="(B,3,224,224) ImageNet-normalised; returns the student's (prob (B,5), activation)",
    tiny_config={"tiny": True},
)
def build_ssliqa(**config: Any) -> SSLIQAPair:
    return SSLIQAPair(**config)
