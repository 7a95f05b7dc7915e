"""`--watch`: score other datasets with the model in training at every evaluated epoch.

This is VIPNet's cross-dataset protocol (`train_cross_datast.py`): train on every image of one
dataset (`--split whole`, ten rounds), score the whole of each other dataset after every epoch, and
report per round the maximum |SRCC| and |PLCC| over epochs, then the median over rounds. Picking the
maximum over epochs looks at the test data, so that statistic is optimistic, and every output says
so; the last epoch's numbers (no selection at all) are reported beside it.

Watched datasets never choose the kept model and never change training.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from iqa_cli.errors import ConfigError, DataError
from iqa_cli.progress import Progress
from iqa_cli.train.data import (
    close_dataset,
    dataset_name,
    images_digest,
    left_out_note,
    open_dataset,
    whole_dataset_test,
)
from iqa_cli.train.distributed import DistContext
from iqa_cli.train.labels import LabelMap, direction_problem
from iqa_cli.train.precision import Precision
from iqa_cli.train.recipes.base import BaseParams, Recipe
from iqa_cli.train.runs import read_log
from iqa_cli.train.views import ViewStore, preload_budget

log = logging.getLogger(__name__)

WATCH_PREFIX = "watch:"  # log.jsonl `part` of a watched dataset's record
OPTIMISTIC = (
    "max over epochs: the epoch is picked on the watched dataset itself (train_cross_datast.py's statistic); "
    "optimistic, not a held-out result"
)


@dataclass
class WatchedDataset:
    """One watched cache: its labels on the training scale and its test-time views, prepared once."""

    name: str
    recipe: Recipe[Any]
    params: BaseParams
    dataset: Any
    indices: np.ndarray
    labels: np.ndarray
    store: ViewStore

    @classmethod
    def open(
        cls,
        source: str,
        recipe: Recipe[Any],
        params: BaseParams,
        device: torch.device,
        *,
        preload_gb: float | None,
        progress: Progress,
        training: tuple[str, str] | None = None,
        train_labels: LabelMap | None = None,
        tell: bool = True,
    ) -> WatchedDataset:
        raw, path = open_dataset(source)
        name = dataset_name(raw, fallback=Path(path).stem)
        if training is not None:
            if name == training[0] or images_digest(raw) == training[1]:
                close_dataset(raw)
                raise ConfigError(
                    f"--watch {source}: that is the dataset being trained on ({training[0]}); --watch scores other "
                    "datasets (the training dataset's test part is scored already)"
                )
        dataset = recipe.wrap_dataset(raw, path, params)
        params = recipe.dataset_params(params, dataset)  # its per-dataset choices (e.g. VIPNet's view)
        labels, label_map = recipe.labels(dataset, params, str(path))
        opposite = direction_problem(train_labels, label_map, "the model being trained", name, advice="train it")
        if opposite is not None:
            close_dataset(dataset)
            raise ConfigError(f"--watch {source}: {opposite}")
        left_out = left_out_note(raw, name)
        if left_out is not None and tell:
            log.warning(f"--watch {source}: {left_out}")
        indices = whole_dataset_test(dataset, recipe.cross_skips_training_images)  # as `iqa eval --cross`
        store = ViewStore(
            dataset, recipe, params, device, indices, budget_bytes=preload_budget(preload_gb), progress=progress
        )
        return cls(name, recipe, params, dataset, indices, np.asarray(labels)[indices], store)

    def evaluate(
        self,
        model: nn.Module,
        *,
        device: torch.device,
        dtype: Precision,
        dist: DistContext,
        channels_last: bool,
    ) -> dict[str, Any]:
        from iqa_cli.train.scoring import predict_scores

        outputs = self.recipe.eval_outputs()
        pred = predict_scores(
            outputs or self.recipe,
            self.params,
            model,
            self.store,
            self.indices,
            device=device,
            dtype=dtype,
            dist=dist,
            channels_last=channels_last,
        )
        if outputs is not None:
            metrics, _ = self.recipe.outputs_metrics(pred, self.labels, self.params)
            return metrics
        return self.recipe.metrics(pred, self.labels, self.params)

    def close(self) -> None:
        close_dataset(self.dataset)


def _refuse_one_dataset_twice(sources: list[str]) -> None:
    """A dataset's name keys its log records and its summary: one cache named twice (by name and by path),
    or a copy of it, would be logged twice under one name. Refused before any views are prepared."""
    given: dict[str, str] = {}
    for source in sources:
        raw, path = open_dataset(source)
        try:
            name = dataset_name(raw, fallback=Path(path).stem)
        finally:
            close_dataset(raw)
        if name in given:
            raise ConfigError(
                f"--watch: '{given[name]}' and '{source}' are both dataset '{name}' (one cache named twice, or a copy "
                "of it): its epochs would be logged twice under one name; watch it once"
            )
        given[name] = source


def open_watched(
    sources: Iterable[str],
    recipe: Recipe[Any],
    params: BaseParams,
    device: torch.device,
    *,
    preload_gb: float | None,
    progress: Progress,
    training: tuple[str, str] | None = None,
    train_labels: LabelMap | None = None,
    tell: bool = True,
) -> list[WatchedDataset]:
    """The watched datasets, opened and their views prepared; `training` (the trained dataset's name and
    `images_digest`) refuses watching the training data itself, by name or as a copy; `train_labels` (the
    training labels' mapping) refuses a dataset whose labels run the other way; `tell`: warn (one DDP rank
    does)."""
    sources = list(sources)
    _refuse_one_dataset_twice(sources)
    opened: list[WatchedDataset] = []
    try:
        for source in sources:
            opened.append(
                WatchedDataset.open(
                    source,
                    recipe,
                    params,
                    device,
                    preload_gb=preload_gb,
                    progress=progress,
                    training=training,
                    train_labels=train_labels,
                    tell=tell,
                )
            )
    except BaseException:
        for watched in opened:
            watched.close()
        raise
    return opened


def _abs(value: Any) -> float:
    number = float(value) if value is not None else math.nan
    return abs(number) if math.isfinite(number) else math.nan


def summarize_log(log: Path) -> dict[str, Any]:
    """Per watched dataset, from a split's log.jsonl: the last evaluated epoch's metrics and the maximum
    |SRCC| and |PLCC| over epochs (each maximised on its own, as the authors do), with their epochs."""
    history: dict[str, list[dict[str, Any]]] = {}
    for record in read_log(log):
        part = str(record.get("part", ""))
        if part.startswith(WATCH_PREFIX) and record.get("epoch", -1) >= 0:
            history.setdefault(part[len(WATCH_PREFIX) :], []).append(record)
    summary: dict[str, Any] = {}
    for name, records in history.items():
        last = records[-1]
        out: dict[str, Any] = {"n": last.get("n"), "epochs": len(records), "last_epoch": last["epoch"]}
        for metric in ("srcc", "plcc"):
            values = [_abs(r.get(metric)) for r in records]
            finite = [(v, r["epoch"]) for v, r in zip(values, records, strict=True) if math.isfinite(v)]
            best = max(finite, key=lambda pair: pair[0]) if finite else (math.nan, None)
            last_value = last.get(metric)
            out[f"last_{metric}"] = float(last_value) if last_value is not None else math.nan
            out[f"max_abs_{metric}"], out[f"max_abs_{metric}_epoch"] = best
        summary[name] = out
    return summary


def median_over_rounds(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per watched dataset: medians over the splits (rounds) of the last-epoch and max-over-epochs values."""
    names = sorted({name for row in rows for name in (row.get("watch") or {})})
    out: dict[str, Any] = {}
    for name in names:
        entries = [row["watch"][name] for row in rows if name in (row.get("watch") or {})]
        medians = {}
        for key in ("last_srcc", "last_plcc", "max_abs_srcc", "max_abs_plcc"):
            values = np.asarray([e.get(key, math.nan) for e in entries], dtype=np.float64)
            medians[key] = float(np.median(values)) if values.size else math.nan
        out[name] = {**medians, "rounds": len(entries), "max_abs_note": OPTIMISTIC}
    return out


def check_measured(summary: dict[str, Any], watched: list[str], source: str) -> None:
    """A watched dataset with no finite SRCC in any round measured nothing: an error, not a table of NaN."""
    for name in watched:
        row = summary.get(name) or {}
        finite = [v for v in (row.get("last_srcc"), row.get("max_abs_srcc")) if v is not None and math.isfinite(v)]
        if not finite:
            raise DataError(
                f"watched dataset '{name}': no round gave a finite SRCC (constant predictions or scores, or too few "
                "images); the figures are in results.json",
                path=source,
            )
