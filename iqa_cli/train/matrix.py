"""One model on several datasets (`iqa eval --cross a,b,c` / `--cross all`), and the train x test
matrix of a method (`iqa eval --matrix --data a,b,c`): intra-dataset results on the diagonal (the
run's own test parts), cross-dataset results elsewhere (every image of the other dataset), each from
the newest run of the method on the training dataset, summarised by the median over its splits."""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iqa_cli.atomic import atomic_path
from iqa_cli.data.records import LEVEL_SCORES
from iqa_cli.errors import CheckpointError, ConfigError, DataError
from iqa_cli.h5files import open_h5
from iqa_cli.home import resolve_cache
from iqa_cli.progress import NullProgress, Progress
from iqa_cli.textlist import comma_list
from iqa_cli.train.evaluate import EvalOptions, EvalReport, check_evaluation, evaluate

log = logging.getLogger(__name__)


def prepared_datasets() -> list[str]:
    """The names of the quality datasets prepared in `$IQA_HOME/data`: every cache except IEIT's enhanced
    companions (`<name>.enhanced.h5`) and generated distorted-image sets (distortion levels, not quality
    scores), which are named in a note."""
    from iqa_cli.enhance.store import SUFFIX as ENHANCED
    from iqa_cli.home import CACHE_SUFFIXES, data_dir

    if not data_dir().is_dir():
        return []
    names, left_out = [], []
    for path in sorted(data_dir().iterdir()):
        if not path.is_file() or path.suffix.lower() not in CACHE_SUFFIXES or path.name.startswith("."):
            continue
        if path.name.lower().endswith(ENHANCED):
            left_out.append(f"{path.name} (IEIT's enhanced images)")
        elif _score_type(path) == LEVEL_SCORES:
            left_out.append(f"{path.name} (distorted images: distortion levels)")
        else:
            names.append(path.stem)
    if left_out:
        log.info(f"note: 'all' leaves out {', '.join(left_out)}")
    return sorted(set(names))


def _score_type(path: Path) -> str | None:
    """A cache's declared score type, read from its attributes only (None for NPZ or unreadable files)."""
    if path.suffix.lower() == ".npz":
        return None

    try:
        with open_h5(path, "r") as handle:
            value = handle.attrs.get("score_type")
    except OSError:
        return None  # opening it as a dataset then says what is wrong, in one line
    return value.decode() if isinstance(value, bytes) else (str(value) if value is not None else None)


def dataset_list(text: str, *, what: str) -> list[str]:
    """`a,b,c` -> [a, b, c]; `all` -> every prepared cache; an empty list is an error."""
    names = prepared_datasets() if text.strip().lower() == "all" else comma_list(text, what)
    if not names:
        raise ConfigError(f"{what}: no datasets (give names, or 'all' with caches in place)")
    seen: dict[Path, str] = {}
    for name in names:  # one cache named twice (or by name and by path) would be scored, and listed, twice
        try:
            path = resolve_cache(name).resolve()
        except DataError:
            continue  # evaluating it says what is missing, in one line
        if path in seen:
            raise ConfigError(f"{what}: '{name}' and '{seen[path]}' are the same cache ({path})")
        seen[path] = name
    return names


def evaluate_cross(options: EvalOptions, targets: list[str], progress: Progress | None = None) -> list[EvalReport]:
    """The same model(s) scored on every image of each target dataset (every target checked first)."""
    progress = progress or NullProgress()
    for target in targets:
        check_evaluation(dataclasses.replace(options, cross=target))
    return [evaluate(dataclasses.replace(options, cross=target), progress) for target in targets]


@dataclass
class MatrixReport:
    method: str
    datasets: list[str]
    metric: str
    values: np.ndarray  # (train, test): the median over the training run's splits
    cells: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "datasets": self.datasets,
            "metric": self.metric,
            "matrix": [[(float(v) if math.isfinite(v) else None) for v in row] for row in self.values],
            "cells": self.cells,
        }

    def write_csv(self, path: Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([f"trained on \\ tested on ({self.metric})", *self.datasets])
            for name, row in zip(self.datasets, self.values, strict=True):
                writer.writerow([name, *[f"{v:.6g}" if math.isfinite(v) else "" for v in row]])


def cross_matrix(
    options: EvalOptions, datasets: list[str], *, metric: str = "srcc", progress: Progress | None = None
) -> MatrixReport:
    """Rows: the newest run of `options.method` trained on each dataset; columns: the datasets tested."""
    from iqa_cli.train.weights import newest_run_weights

    progress = progress or NullProgress()
    if len(set(datasets)) < 2:
        raise ConfigError("--matrix needs at least two datasets in --data (e.g. --data koniq,livew)")
    given = (("--weights", options.weights), ("--split", options.split), ("--split-file", options.split_file))
    ignored = [flag for flag, value in (*given, ("--by-type", options.by_type or None)) if value is not None]
    if ignored:  # each cell uses the newest run on its training dataset and every split that run trained
        raise ConfigError(
            f"{', '.join(ignored)}: not used by --matrix (the newest run on each dataset, all its splits)"
        )
    runs = {}
    for name in datasets:
        run = newest_run_weights(options.method, name, with_test_part=True)  # its diagonal cell tests it
        if run is None:
            raise CheckpointError(
                f"--matrix: no {options.method} run trained on '{name}' with a kept model (train one, or leave "
                f"'{name}' out of --data)"
            )
        runs[name] = run
    values = np.full((len(datasets), len(datasets)), np.nan)
    cells = []

    def cell(trained: str, tested: str) -> EvalOptions:
        cross = None if trained == tested else tested
        return dataclasses.replace(options, data=trained, cross=cross, weights=str(runs[trained].run), split=None)

    for trained in datasets:  # every cell's refusals before any cell is scored
        for tested in datasets:
            check_evaluation(cell(trained, tested))
    for i, trained in enumerate(datasets):
        for j, tested in enumerate(datasets):
            intra = i == j
            report = evaluate(cell(trained, tested), progress)
            value = report.median.get(metric, math.nan)
            if not math.isfinite(value):  # a blank cell would read as a result
                raise ConfigError(f"--matrix: trained on '{trained}', tested on '{tested}': no finite {metric}")
            values[i, j] = value
            cells.append(
                {
                    "trained_on": trained,
                    "tested_on": tested,
                    "kind": "intra" if intra else "cross",
                    "run": str(runs[trained].run),
                    metric: value if math.isfinite(value) else None,
                    "splits": report.median.get("splits"),
                    # "test": the run kept the epoch that scored best on its test part (paper habit), so its
                    # diagonal cell is optimistic; the table marks it.
                    "selected_on": ",".join(sorted({str(row.get("selected_on")) for row in report.results})),
                    **(
                        {"includes_training_images": True}  # two names of one dataset: said in the log too
                        if any(row.get("includes_training_images") for row in report.results)
                        else {}
                    ),
                }
            )
    return MatrixReport(options.method, list(datasets), metric, values, cells)
