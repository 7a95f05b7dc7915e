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

from types import ModuleType

from iqa_cli.data.records import DatasetSpec
from iqa_cli.registry import Registry

# One entry per dataset module in this package (each defines SPEC: DatasetSpec); plugins add parsers
# through the `iqa_cli.datasets` entry-point group, with modules that call `register_dataset`.
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
_BUILTIN = {name: f"iqa_cli.data.datasets.{name}" for name in _MODULES}


def _add_spec(module: ModuleType) -> None:
    """Built-in dataset modules define `SPEC` rather than registering: importing one adds it."""
    register_dataset(module.SPEC)


DATASET_REGISTRY: Registry[DatasetSpec] = Registry(
    "dataset", builtin=_BUILTIN, plugin_group="iqa_cli.datasets", on_import=_add_spec
)


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a parser (its `name` and `aliases`), e.g. from a plugin module."""
    return DATASET_REGISTRY.add(spec.name, spec, aliases=spec.aliases)


def get_dataset(name: str) -> DatasetSpec:
    return DATASET_REGISTRY.get(name.lower())


def is_dataset_name(name: str) -> bool:
    """Whether `name` (or an alias) names a dataset parser."""
    return DATASET_REGISTRY.known(name)


def all_datasets() -> dict[str, DatasetSpec]:
    """Every dataset parser by name, built-in and from plugins."""
    return dict(DATASET_REGISTRY.items())


def __getattr__(name: str) -> dict[str, DatasetSpec]:
    """`DATASETS`: every parser by name (kept for callers of the former module-level dict)."""
    if name == "DATASETS":
        return all_datasets()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
