"""What a cache makes of a run's options: the labels it trains on and the options the dataset resolves
(`Recipe.dataset_params`). A run records them (`data_choices` in run.json; its checkpoints' metadata says
too), so a run that goes on, joins others or is evaluated on its own dataset can be told when `iqa` now
makes other ones of the same data (a fix of a method's labels or views): its figures would otherwise
silently come from other targets or views than it trained with."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iqa_cli.errors import ConfigError
from iqa_cli.train.config import to_plain
from iqa_cli.train.data import close_dataset, open_dataset
from iqa_cli.train.labels import LabelMap
from iqa_cli.train.recipes.base import BaseParams, Recipe
from iqa_cli.train.runs import BEST, split_dir


@dataclass(frozen=True)
class DataChoices:
    """What a cache makes of a run's options: the labels it trains on, and the options the dataset resolved
    (`Recipe.dataset_params`: VIPNet's view mode and canvas, ...), as {name: value} where they differ from
    the options given. Recorded in run.json: a run that goes on, or joins others, must get the same."""

    labels: LabelMap
    params: dict[str, Any]

    def to_record(self) -> dict[str, Any]:
        return {"labels": self.labels.to_meta(), "params": self.params}


def choices_of(given: BaseParams, on_dataset: BaseParams, labels: LabelMap) -> DataChoices:
    """The `DataChoices` of `given` options that a dataset resolved to `on_dataset` with these `labels`."""
    import json

    plain_given, plain_on = to_plain(given), json.loads(json.dumps(to_plain(on_dataset)))  # as run.json reads back
    return DataChoices(labels, {k: v for k, v in plain_on.items() if plain_given.get(k) != v})


def data_choices(recipe: Recipe[Any], given: BaseParams, dataset: Any, source: str) -> DataChoices:
    """The `DataChoices` of `given` options on `dataset`."""
    on_dataset = recipe.dataset_params(given, dataset)
    return choices_of(given, on_dataset, recipe.dataset_label_map(dataset, on_dataset, source))


def choices_on(recipe: Recipe[Any], given: BaseParams, data: str | Path) -> DataChoices:
    """The `DataChoices` of `given` options in the cache `data`."""
    raw, path = open_dataset(data)
    try:
        return data_choices(recipe, given, raw, str(path))
    finally:
        close_dataset(raw)


def run_choices(info: dict[str, Any], root: Path) -> DataChoices | None:
    """What a run's cache made of its options: run.json's `data_choices`, or, for a record written before it
    kept them, what a split's kept model says; None when neither does."""
    from iqa_cli.models.checkpoint import read_metadata

    recorded = info.get("data_choices")
    if isinstance(recorded, dict):
        return DataChoices(LabelMap.from_meta(recorded["labels"]), dict(recorded.get("params") or {}))
    for split in info.get("splits") or {}:
        best = split_dir(root, split) / BEST
        if best.is_file():
            return checkpoint_choices(read_metadata(best))
    return None


def checkpoint_choices(meta: Mapping[str, Any]) -> DataChoices | None:
    """What a checkpoint's training cache made of its options (its `labels`, `params` and
    `params_on_dataset` metadata); None when it does not say (not an iqa checkpoint)."""
    import json

    def parsed(value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    if not meta.get("labels") or not meta.get("params"):
        return None
    given = parsed(meta["params"])
    on_dataset = parsed(meta.get("params_on_dataset")) or given
    # A dataset resolves `none` options to values, never a value to `none`: earlier IEIT checkpoints
    # recorded the stage's filled values beside unfilled ones, which are no choice of the dataset.
    changed = {k: v for k, v in on_dataset.items() if given.get(k) != v and v is not None}
    return DataChoices(LabelMap.from_meta(parsed(meta["labels"])), changed)


def choices_change(
    before: DataChoices | None, now: DataChoices, given: BaseParams, *, now_word: str = "now"
) -> str | None:
    """What differs between what a run's cache made of its options (`before`) and what it makes now (or
    another run's), as `labels X, now Y; canvas A on this dataset, now B`; None when nothing does."""
    if before is None:
        return None
    plain = to_plain(given)
    reasons = []
    if not before.labels.same_targets(now.labels):  # the wording of a description may change between versions
        reasons.append(
            f"labels {before.labels.description} ({before.labels.column}), {now_word} {now.labels.description} "
            f"({now.labels.column})"
        )
    for key in sorted(before.params.keys() | now.params.keys()):
        then, current = before.params.get(key, plain.get(key)), now.params.get(key, plain.get(key))
        if then != current:
            reasons.append(f"{key} {then!r} on this dataset, {now_word} {current!r}")
    return "; ".join(reasons) or None


def check_same_choices(
    info: dict[str, Any], root: Path, choices: DataChoices, given: BaseParams, cache_path: str | Path
) -> None:
    """A ConfigError when the run at `root` trained with other labels or dataset-resolved options than its
    cache gives now (iqa changed them since): going on would train on other targets or views."""
    changed = choices_change(run_choices(info, root), choices, given)
    if changed:
        raise ConfigError(
            f"this run cannot continue on {cache_path}: it trained with {changed}; start a new run", path=root
        )


def changed_inputs(recorded: Mapping[str, Any], now: Mapping[str, str]) -> list[str]:
    """The `Recipe.data_identity` keys (e.g. IEIT's enhanced images) whose digest in `now` differs from the one
    `recorded` (a run's or a checkpoint's); a key not recorded is not compared (records made before it)."""
    return sorted(key for key, digest in now.items() if key in recorded and recorded[key] != digest)


def inputs_text(keys: list[str]) -> str:
    """`changed_inputs` as words: 'enhanced images'."""
    return ", ".join(key.replace("_", " ") for key in keys)
