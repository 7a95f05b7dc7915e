"""Dataset registry: name -> `DatasetSpec` (parser + score conventions).

Each dataset lives in its own module exposing `SPEC`; add a dataset with one new module and one
line in `_MODULES`.
"""

from __future__ import annotations

import importlib

from iqa_cli.data.records import DatasetSpec
from iqa_cli.errors import ConfigError

# One entry per dataset module in this package (each defines SPEC: DatasetSpec).
_MODULES: list[str] = [
]

DATASETS: dict[str, DatasetSpec] = {}
_ALIASES: dict[str, str] = {}


def _load() -> None:
    for module_name in _MODULES:
        spec: DatasetSpec = importlib.import_module(f"iqa_cli.data.datasets.{module_name}").SPEC
        DATASETS[spec.name] = spec
        for alias in spec.aliases:
            _ALIASES[alias.lower()] = spec.name


def get_dataset(name: str) -> DatasetSpec:
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset '{name}' (known: {', '.join(sorted(DATASETS))})")
    return DATASETS[key]


_load()
