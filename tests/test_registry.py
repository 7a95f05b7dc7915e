"""The registry behind methods, networks and datasets: names and other names (aliases) never collide."""

from __future__ import annotations

import pytest

from iqa_cli.registry import Registry


def _registry() -> Registry[str]:
    # "live": a built-in name whose module (any importable one here) registers nothing until imported.
    registry: Registry[str] = Registry("dataset", builtin={"live": "json"}, plugin_group="iqa_test.none")
    registry.add("koniq", "built-in koniq", aliases=("koniq10k",))
    return registry


@pytest.mark.parametrize(
    ("name", "aliases", "owner"),
    [
        ("mine", ("KonIQ",), "koniq"),  # another entry's name: aliases are looked up first, so it answered for it
        ("mine", ("koniq10k",), "koniq"),  # another entry's other name
        ("mine", ("live",), "live"),  # a built-in whose module is not imported yet
    ],
)
def test_an_alias_that_is_another_entrys_name_is_refused(name, aliases, owner):
    """A plugin dataset with the other name 'koniq' made every `--data koniq` resolve to the plugin's
    dataset, silently."""
    registry = _registry()
    with pytest.raises(RuntimeError, match=f"other name '{aliases[0]}' is taken by dataset '{owner}'"):
        registry.add(name, "plugin", aliases=aliases)
    assert registry.get("koniq") == registry.get("koniq10k") == "built-in koniq"
    assert not registry.known("mine")


def test_a_name_that_is_another_entrys_alias_is_refused():
    registry = _registry()
    with pytest.raises(RuntimeError, match="'koniq10k' is already another name of dataset 'koniq'"):
        registry.add("koniq10k", "plugin")
    with pytest.raises(RuntimeError, match="registered twice"):
        registry.add("koniq", "plugin")


def test_names_and_aliases_resolve_case_blind_for_aliases():
    registry = _registry()
    registry.add("spaq", "built-in spaq", aliases=("SPAQ-11k",))
    assert registry.get("spaq-11k") == registry.get("SPAQ-11K") == "built-in spaq"
