"""Choice options are `Literal[...]` fields: one check in the config layer, shown and completed by the CLI;
the protocol VT-IQA, IEIT and AL-IQA share is declared once."""

from __future__ import annotations

import dataclasses
import typing

import pytest
from typer.testing import CliRunner

from iqa_cli.errors import ConfigError
from iqa_cli.train.config import EngineConfig, apply_values, check_choices, choices_of, coerce, field_types
from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.recipes.esnthere import EsnthereParams, PlateauParams


def test_literal_choices_match_the_registries_they_name():
    from iqa_cli.models.ssliqa import PAIRS
    from iqa_cli.models.vipnet import CPM_ARCHS
    from iqa_cli.train.recipes.ssliqa import Network
    from iqa_cli.train.recipes.vipnet import Cpm

    assert typing.get_args(Network) == tuple(PAIRS)
    assert typing.get_args(Cpm) == tuple(CPM_ARCHS)


def test_a_choice_is_checked_from_text_toml_and_python():
    params = get_recipe("vtiqa").Params()
    assert apply_values(params, {"loss": "mse"}, source="--loss").loss == "mse"
    with pytest.raises(ConfigError, match="loss must be one of l1, mse, smooth_l1, got 'huber'"):
        apply_values(params, {"loss": "huber"}, source="--loss")
    with pytest.raises(ConfigError, match="optimizer must be one of sgd, adamw, got 'adam'"):
        check_choices(dataclasses.replace(params, optimizer="adam"))  # e.g. a saved run or a script
    with pytest.raises(ConfigError, match="gpu_cache must be one of auto, on, off"):
        dataclasses.replace(EngineConfig(), gpu_cache="yes").validate()
    # an optional choice accepts none; numbers given as text become numbers
    ieit = get_recipe("ieit").Params()
    assert apply_values(ieit, {"loss": "none"}, source="--loss").loss is None
    assert coerce("stage", typing.Literal[1, 2], "2") == 2
    with pytest.raises(ConfigError, match="stage must be one of 1, 2, got '3'"):
        coerce("stage", typing.Literal[1, 2], "3")


def test_every_recipes_defaults_are_among_their_choices():
    from iqa_cli.train.recipes import recipe_names

    for name in recipe_names():
        recipe = get_recipe(name)
        check_choices(recipe.Params())
        for field_name, tp in field_types(recipe.Params).items():
            choices = choices_of(tp)
            assert choices is None or all(isinstance(c, type(choices[0])) for c in choices), field_name


def test_the_shared_protocol_is_declared_once_and_restated_with_its_help():
    vtiqa, ieit, aliqa = (get_recipe(n).Params for n in ("vtiqa", "ieit", "aliqa"))
    assert issubclass(vtiqa, EsnthereParams) and issubclass(ieit, EsnthereParams)
    assert issubclass(aliqa, PlateauParams) and not issubclass(aliqa, EsnthereParams)
    helps = {cls: {f.name: f.metadata["help"] for f in dataclasses.fields(cls)} for cls in (PlateauParams, ieit, aliqa)}
    # a method's own default keeps the shared declaration's help
    assert helps[ieit]["plateau_after"] == helps[PlateauParams]["plateau_after"]
    assert helps[aliqa]["patience"] == helps[PlateauParams]["patience"]
    assert (ieit().plateau_after, aliqa().plateau_after, vtiqa().plateau_after) == (60, 10, 20)


def test_the_cli_shows_the_choices():
    from iqa_cli.cli.main import app

    result = CliRunner().invoke(app, ["train", "vtiqa", "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "[choices: l1|mse|smooth_l1]" in result.output and "[choices: auto|bf16|fp16|tf32|off]" in result.output


def test_a_choice_is_completed_by_the_shell():
    from iqa_cli.cli.train import _completer

    assert _completer(("l1", "mse", "smooth_l1"))("sm") == ["smooth_l1"]
