"""Dataset registry: name -> `DatasetSpec` (parser + score conventions).

Each dataset lives in its own module exposing `SPEC`; add a dataset with one new module and one
line in `_MODULES`.

Parser contract: `SPEC.parse(root, *, on_missing=None) -> list[Record]`. `root` is the user's
--root (the dataset folder or a parent; metadata is found by a recursive search). Records come in
the metadata's order after the documented drops, with native scores unchanged. A listed image that
is not on disk raises a one-line DataError, unless `on_missing` is given: then it is called with the
image's relative name and the row is skipped (`iqa prepare --skip-bad`). Parsers never decode images.
Shared helpers for parsers are in `_files.py`.
"""

from __future__ import annotations

import importlib

from iqa_cli.data.records import DatasetSpec
from iqa_cli.errors import ConfigError

# One entry per dataset module in this package (each defines SPEC: DatasetSpec).
_MODULES: list[str] = [
    "livew",
    "koniq",
    "spaq",
    "bid",
    "rbid",
    "cid2013",
    "kadid10k",
    "live",
    "csiq",
    "tid2013",
    "custom",
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
