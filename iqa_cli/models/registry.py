"""Method name -> network builder, plus what the CLI needs to describe it.

Each architecture file registers its builders with `@register_model`, so adding a network touches
one new file plus one import line in `iqa_cli/models/__init__.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from iqa_cli.errors import ConfigError

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


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    description: str,
    inputs: str,
    convert_original: Callable[[StateDict], StateDict] | None = None,
    tiny_config: dict[str, Any] | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise RuntimeError(f"model '{name}' registered twice")
        _REGISTRY[name] = ModelEntry(
            name=name,
            builder=builder,
            description=description,
            inputs=inputs,
            convert_original=convert_original,
            tiny_config=dict(tiny_config or {}),
        )
        return builder

    return decorate


def get_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown model '{name}' (known: {known})") from None


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, *, tiny: bool = False, **config: Any) -> nn.Module:
    """Build the network registered as `name`; `tiny=True` gives the CPU-test configuration."""
    entry = get_entry(name)
    kwargs = {**(entry.tiny_config if tiny else {}), **config}
    model = entry.builder(**kwargs)
    model.iqa_model_name = name  # recorded in checkpoints, checked on load
    return model
