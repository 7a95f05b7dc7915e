"""Method name -> network builder, plus what the CLI needs to describe it.

Each architecture file registers its builders with `@register_model`; `_BUILTIN` says which file
defines each built-in name (it is imported on first use), and plugins add networks through the
`iqa_cli.models` entry-point group.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from iqa_cli.registry import Registry

MODEL_NAME_ATTR = "iqa_model_name"  # the attribute that carries a built network's registry name
StateDict = dict[str, Any]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    inputs: str  # human-readable input layout, e.g. "2 x (B,3,224,224) ImageNet-normalised"
    # Maps a state dict in the authors' key names (already stripped of `module.`) onto ours.
    # None means our names are the authors' names.
    convert_original: Callable[[StateDict], StateDict] | None = None
    tiny_config: dict[str, Any] = field(default_factory=dict)  # kwargs for a CPU-test-sized network


# Each built-in network's module (imported when one of its names is first asked for); plugins add
# networks through the `iqa_cli.models` entry-point group (see iqa_cli.registry).
_BUILTIN = {
    "aliqa": "iqa_cli.models.aliqa",
    "ieit": "iqa_cli.models.ieit",
    **dict.fromkeys(
        ["ssliqa", "ssliqa-googlenet", "ssliqa-inceptionresnetv2", "ssliqa-student", "ssliqa-teacher", "ssliqa-tres"],
        "iqa_cli.models.ssliqa",
    ),
    "vipnet": "iqa_cli.models.vipnet",
    "vipnet-dpm": "iqa_cli.models.botnet",
    "vtiqa": "iqa_cli.models.vtiqa",
    **dict.fromkeys(
        ["vtiqa-org", "vtiqa-org-backbone", "vtiqa-org-fusion", "vtiqa-org-selection"], "iqa_cli.models.vtiqa_org"
    ),
}
MODELS: Registry[ModelEntry] = Registry("model", builtin=_BUILTIN, plugin_group="iqa_cli.models")


def register_model(
    name: str,
    *,
    description: str,
    inputs: str,
    convert_original: Callable[[StateDict], StateDict] | None = None,
    tiny_config: dict[str, Any] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS.add(
            name,
            ModelEntry(
                name=name,
                builder=builder,
                description=description,
                inputs=inputs,
                convert_original=convert_original,
                tiny_config=dict(tiny_config or {}),
            ),
        )
        return builder

    return decorate


def get_entry(name: str) -> ModelEntry:
    return MODELS.get(name)


def model_names() -> list[str]:
    return MODELS.names()


def create(name: str, *, tiny: bool = False, **config: Any) -> nn.Module:
    """Build the network registered as `name`; `tiny=True` gives the CPU-test configuration."""
    entry = get_entry(name)
    kwargs = {**(entry.tiny_config if tiny else {}), **config}
    model = entry.builder(**kwargs)
    setattr(model, MODEL_NAME_ATTR, name)  # recorded in checkpoints, checked on load
    return model
