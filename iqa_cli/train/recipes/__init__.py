"""Recipe registry: method name -> `Recipe` (`iqa_cli.registry`). A built-in method is one module in this
package and one line in `_BUILTIN`; a plugin registers its recipe from a module named in the
`iqa_cli.recipes` entry-point group."""

from __future__ import annotations

from typing import Any

from iqa_cli.registry import Registry
from iqa_cli.train.recipes.base import BaseParams, Recipe

_BUILTIN = {
    "vtiqa": "iqa_cli.train.recipes.vtiqa",
    "vipnet-dpm": "iqa_cli.train.recipes.vipnet_dpm",
    "vipnet": "iqa_cli.train.recipes.vipnet",
    "aliqa": "iqa_cli.train.recipes.aliqa",
    "ssliqa": "iqa_cli.train.recipes.ssliqa",
    "ieit": "iqa_cli.train.recipes.ieit",
}
RECIPES: Registry[Recipe[Any]] = Registry("method", builtin=_BUILTIN, plugin_group="iqa_cli.recipes")


def register_recipe(cls: type[Recipe[Any]]) -> type[Recipe[Any]]:
    RECIPES.add(cls.name, cls())
    return cls


def get_recipe(name: str) -> Recipe[Any]:
    return RECIPES.get(name)


def recipe_names() -> list[str]:
    return RECIPES.names()


__all__ = ["BaseParams", "Recipe", "get_recipe", "recipe_names", "register_recipe"]
