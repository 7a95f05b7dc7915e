"""Recipe registry: method name -> `Recipe`. Add a method with one module and one line in `_MODULES`."""

from __future__ import annotations

import importlib

from iqa_cli.errors import ConfigError
from iqa_cli.train.recipes.base import BaseParams, Recipe

_MODULES = ["vtiqa", "vipnet_dpm", "vipnet", "aliqa", "ssliqa", "ieit"]
_RECIPES: dict[str, Recipe] = {}


def register_recipe(cls: type[Recipe]) -> type[Recipe]:
    if cls.name in _RECIPES:
        raise RuntimeError(f"recipe '{cls.name}' registered twice")
    _RECIPES[cls.name] = cls()
    return cls


def get_recipe(name: str) -> Recipe:
    _load()
    try:
        return _RECIPES[name]
    except KeyError:
        raise ConfigError(f"no training recipe for '{name}' (known: {', '.join(sorted(_RECIPES))})") from None


def recipe_names() -> list[str]:
    _load()
    return sorted(_RECIPES)


def _load() -> None:
    for module in _MODULES:
        importlib.import_module(f"iqa_cli.train.recipes.{module}")


__all__ = ["BaseParams", "Recipe", "get_recipe", "recipe_names", "register_recipe"]
