"""One small registry for every kind of thing `iqa` looks up by name: recipes (methods), networks and
dataset parsers.

Each registry knows which built-in module defines each of its names, so it imports a module only when
one of its names is asked for (`iqa --help` does not build AL-IQA). Third-party packages add entries
through entry points: the group `iqa_cli.recipes`, `iqa_cli.models` or `iqa_cli.datasets` names
modules that register on import, e.g. in a plugin's `pyproject.toml`

    [project.entry-points."iqa_cli.recipes"]
    mymethod = "my_iqa_plugin.recipe"

A name that is not found gets "did you mean" and the list of known names.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType
from typing import Generic, TypeVar

from iqa_cli.errors import ConfigError

T = TypeVar("T")
PLUGIN_GROUPS = ("iqa_cli.recipes", "iqa_cli.models", "iqa_cli.datasets")


class Registry(Generic[T]):
    """Names (and aliases) -> objects of one kind, filled by the modules that define them."""

    def __init__(
        self,
        kind: str,
        *,
        builtin: Mapping[str, str],
        plugin_group: str,
        on_import: Callable[[ModuleType], None] | None = None,
    ) -> None:
        self.kind = kind  # "method", "model", "dataset": how errors name an entry
        self.builtin = dict(builtin)  # name -> module that registers it (imported on first use)
        self.plugin_group = plugin_group
        self._on_import = on_import  # for built-in modules that define rather than register
        self._imported: set[str] = set()
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._plugins_loaded = False
        self._all_loaded = False

    # ------------------------------------------------------------------ filling

    def add(self, name: str, entry: T, *, aliases: Iterable[str] = ()) -> T:
        if name in self._entries:
            raise RuntimeError(f"{self.kind} '{name}' registered twice")
        if name.lower() in self._aliases:
            raise RuntimeError(
                f"{self.kind} '{name}' is already another name of {self.kind} '{self._aliases[name.lower()]}'"
            )
        # An alias is looked up before the names: one equal to another entry's name or alias would
        # silently answer for it (a plugin's alias 'koniq' would train every `--data koniq` on its data).
        for alias in aliases:
            key = alias.lower()
            names = (n for n in (*self._entries, *self.builtin) if n.lower() == key)
            owner = self._aliases.get(key) or next(names, None)
            if owner is not None and owner != name:
                raise RuntimeError(f"{self.kind} '{name}': its other name '{alias}' is taken by {self.kind} '{owner}'")
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias.lower()] = name
        return entry

    # ------------------------------------------------------------------ reading

    def get(self, name: str) -> T:
        key = self._aliases.get(name.lower(), name)
        if key not in self._entries and key in self.builtin:
            self._import(self.builtin[key])
        if key not in self._entries:  # an alias of a module not imported yet, or a plugin's name
            self.load_all()
            key = self._aliases.get(name.lower(), key)
        if key not in self._entries:
            known = self.names()
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"unknown {self.kind} '{name}'{hint} (known: {', '.join(known)})")
        return self._entries[key]

    def known(self, name: str) -> bool:
        """Whether `name` is a name or an alias here (loads every module once)."""
        self.load_all()
        return name in self._entries or name.lower() in self._aliases or name.lower() in self._entries

    def names(self) -> list[str]:
        """Every name, built-in and from plugins (imports every module once)."""
        self.load_all()
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self.load_all()
        return sorted(self._entries.items())

    def load_all(self) -> None:
        if not self._all_loaded:
            for module in sorted(set(self.builtin.values())):
                self._import(module)
            self.load_plugins()
            self._all_loaded = True

    def _import(self, name: str) -> None:
        module = importlib.import_module(name)
        if name not in self._imported:
            self._imported.add(name)
            if self._on_import is not None:
                self._on_import(module)

    def load_plugins(self) -> None:
        """Import the modules that installed packages declare under this registry's entry-point group."""
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        from importlib.metadata import entry_points

        for point in entry_points(group=self.plugin_group):
            try:
                point.load()
            except Exception as exc:  # a broken plugin names itself; it never hides the built-in entries
                raise ConfigError(
                    f"the plugin entry point '{point.name} = {point.value}' ({self.plugin_group}) failed to load: "
                    f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                ) from None
