"""`iqa train METHOD --sweep FIELD --sweep-values a,b,c --repeats N`: one option at several values, each
trained N times (seeds seed, seed+1, ...), every run reported and the mean per value.

AL-IQA's authors ran their step scripts as `main(0.005); main(0.01); main(0.1); main(1)`, each training
three times, and averaged: `iqa train aliqa --sweep borda_weights --sweep-values 0.005,0.01,0.1,1
--repeats 3`. A single value for a per-round option (a tuple, such as `borda_weights`) applies to every
round, as the authors' one `wt` does.

The runs live inside the sweep's folder (`<sweep>/<field>-<value>-r<k>/`, ordinary run folders: `iqa
eval --weights` takes them); `sweep.json` there holds the table. Running the same command again (same
`--name`/`--out`) skips finished runs and resumes unfinished ones.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from iqa_cli.errors import ConfigError, DataError
from iqa_cli.progress import NullProgress, Progress
from iqa_cli.seeds import MAX_SEED
from iqa_cli.textlist import comma_list
from iqa_cli.train.choices import choices_change, choices_on, run_choices
from iqa_cli.train.config import EngineConfig, write_json
from iqa_cli.train.distributed import env_world, init_distributed, resolve_device
from iqa_cli.train.engine import time_limit_clock
from iqa_cli.train.metrics import is_measured, logistic_fallbacks
from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.runs import RESULT_FILE, cut_by_step_limit, read_run, run_root
from iqa_cli.train.trainer import (
    RESUMABLE_CHANGES,
    ResolvedConfig,
    TrainOptions,
    cache_copy_mismatch,
    load_run_config,
    planned_config,
    resolve_config,
    result_options,
    run_data_changes,
    train,
)

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
# More runs than any study would train in one sweep: a slip such as `--repeats 99999999999` is refused
# before planning (a list of that many runs filled the memory), never left running.
MAX_SWEEP_RUNS = 1000
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")


def sweep_values(field: str, text: str, options: TrainOptions) -> list[tuple[str, Any]]:
    """(label, value) per swept value, each checked against the method's options before anything runs."""
    recipe = get_recipe(options.method)
    names = {f.name for f in fields(recipe.Params)} | {f.name for f in fields(EngineConfig)}
    if field not in names:
        raise ConfigError(f"--sweep: {options.method} has no option '{field}'")
    if field == "seed":
        raise ConfigError("--sweep: the seed is what --repeats varies; sweep another option")
    labels = comma_list(text, "--sweep-values")
    if not labels:
        raise ConfigError("--sweep-values: give at least one value, e.g. 0.005,0.01,0.1,1")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--sweep-values: a value is given twice in '{text}'")
    base = resolve_config(recipe, tiny=options.tiny, config_file=options.config_file, overrides=options.overrides)
    current = getattr(base.params, field, None) if hasattr(base.params, field) else getattr(base.engine, field)
    out = []
    resolved: dict[str, str] = {}  # the value each label sets, as the run would read it -> its label
    for label in labels:
        value: Any = label
        if isinstance(current, tuple) and len(current) > 1 and "," not in label:
            value = ",".join([label] * len(current))  # one value for every round
        config = resolve_config(
            recipe, tiny=options.tiny, config_file=options.config_file, overrides={**options.overrides, field: value}
        )
        owner = config.params if hasattr(config.params, field) else config.engine
        key = repr(getattr(owner, field))
        if key in resolved:  # '0.1' and '1e-1' would train the same run twice, as two settings
            raise ConfigError(f"--sweep-values: '{resolved[key]}' and '{label}' are the same value of {field}")
        resolved[key] = label
        out.append((label, value))
    return out


@dataclass(frozen=True)
class SweepPlan:
    """The runs a sweep trains: (label, repeat, folder, the run's options) each, all checked."""

    root: Path
    dataset: str
    values: list[tuple[str, Any]]
    jobs: list[tuple[str, int, Path, dict[str, Any]]]


def plan_sweep(options: TrainOptions, field: str | None, values_text: str | None, repeats: int) -> SweepPlan:
    """Every (value, repeat) run of a sweep, its folder and options; refused, before anything trains, where
    a value is not one the option takes or a kept run was made with other options."""
    if not 1 <= repeats <= MAX_SWEEP_RUNS:
        raise ConfigError(f"--repeats: must be between 1 and {MAX_SWEEP_RUNS}, got {repeats}")
    if options.resume:
        raise ConfigError("--sweep continues by itself: run the same command again (drop --resume)")
    if options.data is None:
        raise ConfigError("--data is required: a prepared dataset name or a cache file")
    if field is None and values_text:
        raise ConfigError("--sweep-values needs --sweep (the option they are values of)")
    if field is not None and not values_text:
        raise ConfigError(f"--sweep {field} needs --sweep-values, e.g. --sweep-values 0.005,0.01,0.1,1")
    # Without --sweep: the configuration as given, repeated (`--repeats` alone).
    values = sweep_values(field, values_text or "", options) if field is not None else [("given", None)]
    dataset = Path(str(options.data)).stem
    what = _UNSAFE.sub("_", field) if field is not None else "repeats"
    name = options.name or f"{options.method}-{dataset}-sweep-{what}"
    root = run_root(method=options.method, dataset=dataset, name=None if options.out else name, out=options.out)
    recipe = get_recipe(options.method)
    # The first repeat's seed is the run's own: --seed, else a --config file's, else the default. Reading
    # --seed alone trained a config file's `seed = 5` sweep at seeds 0, 1, ..., silently.
    given = resolve_config(recipe, tiny=options.tiny, config_file=options.config_file, overrides=options.overrides)
    seed = int(given.engine.seed)
    if len(values) * repeats > MAX_SWEEP_RUNS:
        raise ConfigError(
            f"--sweep-values x --repeats: {len(values)} x {repeats} runs, more than {MAX_SWEEP_RUNS} in one sweep"
        )
    if seed + repeats - 1 > MAX_SEED:
        raise ConfigError(
            f"--repeats: repeat N trains with seed + N - 1, and seed {seed} + {repeats - 1} passes the largest seed, "
            f"{MAX_SEED}; lower --seed or --repeats"
        )
    jobs = [  # (label, repeat, folder, the run's options)
        (
            label,
            repeat,
            root / (f"{what}-{_UNSAFE.sub('_', label)}-r{repeat}" if field is not None else f"r{repeat}"),
            {**options.overrides, **({field: value} if field is not None else {}), "seed": seed + repeat - 1},
        )
        for label, value in values
        for repeat in range(1, repeats + 1)
    ]
    for _, _, folder, overrides in jobs:  # every kept run is checked before any trains
        if (folder / "run.json").is_file():
            expected = resolve_config(recipe, tiny=options.tiny, config_file=options.config_file, overrides=overrides)
            check_same_run(folder, options, expected)
    return SweepPlan(root, dataset, values, jobs)


def planned_sweep(options: TrainOptions, field: str | None, values_text: str | None, repeats: int) -> dict[str, Any]:
    """What a sweep would train, without training (`--print-config`): each run's folder, value, seed and
    plan (`trainer.planned_config`), every one checked as the sweep checks it."""
    plan = plan_sweep(options, field, values_text, repeats)
    runs = []
    for label, repeat, folder, overrides in plan.jobs:
        kept = (folder / "run.json").is_file()  # a kept run continues with its own saved options
        sub = dataclasses.replace(options, out=folder, name=None, resume=kept, overrides={} if kept else overrides)
        runs.append(
            {"value": label, "repeat": repeat, "seed": overrides["seed"], "run": str(folder), "kept": kept,
             "plan": planned_config(sub)}
        )  # fmt: skip
    return {"method": options.method, "field": field, "repeats": repeats, "sweep": str(plan.root), "runs": runs}


def run_sweep(
    options: TrainOptions,
    field: str | None,
    values_text: str | None,
    repeats: int,
    progress: Progress | None = None,
) -> dict[str, Any] | None:
    """Train every (value, repeat) into the sweep folder and return (and write) the sweep table; None on
    the other ranks of a DDP job (they train with rank 0, which alone writes and reports the table)."""
    progress = progress or NullProgress()
    plan = plan_sweep(options, field, values_text, repeats)
    rank, world, local = env_world()
    group = None
    if world > 1:
        # Under torchrun one process group serves every run: a group destroyed after one run and made again
        # for the next hung that next run's first collective now and then (1 in 3 here, on gloo).
        resolved = resolve_config(
            get_recipe(options.method), tiny=options.tiny, config_file=options.config_file, overrides=options.overrides
        )
        group = init_distributed(resolve_device(resolved.engine.device, local))
    with time_limit_clock():  # `--time-limit` covers the whole sweep, not each of its runs
        rows = _train_jobs(options, field, repeats, plan, progress)
    if group is not None:
        group.barrier()  # every rank is done before the group goes
        group.shutdown()
    if rank != 0:  # its table would hold no rows, and be written and printed twice
        return None
    columns = list(get_recipe(options.method).report_metrics)
    table = {
        "method": options.method,
        "dataset": plan.dataset,
        "field": field,
        "values": [label for label, _ in plan.values],
        "repeats": repeats,
        "sweep": str(plan.root),
        "columns": columns,
        "runs": rows,
        "by_value": [_mean_of([r for r in rows if r["value"] == label], columns, label) for label, _ in plan.values],
    }
    plan.root.mkdir(parents=True, exist_ok=True)
    write_json(plan.root / SWEEP_FILE, table)
    check_means(table)
    return table


def _train_jobs(
    options: TrainOptions, field: str | None, repeats: int, plan: SweepPlan, progress: Progress
) -> list[dict[str, Any]]:
    """Train (or read back) every run of the plan; its table rows (complete on rank 0 only: other ranks get
    no report back from a run)."""
    rows: list[dict[str, Any]] = []
    for label, repeat, folder, overrides in plan.jobs:
        run_seed = overrides["seed"]
        report = _finished_report(folder)
        if report is None:
            setting = f"{field}={label}, " if field is not None else ""
            log.info(f"sweep: {setting}repeat {repeat} of {repeats} (seed {run_seed}): {folder}")
            started = (folder / "run.json").is_file()
            sub = dataclasses.replace(
                options,
                out=folder,
                name=None,
                resume=started,
                # A resumed run keeps its saved options (checked above to be these); where it runs may change.
                overrides=overrides if not started else {k: overrides[k] for k in RESUMABLE_CHANGES & set(overrides)},
            )
            report = train(sub, progress)
            if report is None:  # not rank 0 of a DDP job
                continue
        rows.append(
            {
                "value": label,
                "repeat": repeat,
                "seed": run_seed,
                "run": str(folder),
                "selected_on": report.get("selected_on"),  # "test": each value's score is its best test epoch
                **{k: report["median"].get(k) for k in report.get("columns", [])},
                "logistic_fallbacks": logistic_fallbacks(report.get("splits", [])),
                **_cut_splits(report),
            }
        )
    return rows


def _cut_splits(report: dict[str, Any]) -> dict[str, list[str]]:
    """`cut_by_step_limit`: the run's splits that `--max-steps` stopped before the protocol's end."""
    cut = [str(row["split"]) for row in report.get("splits", []) if cut_by_step_limit(row.get("stopped_because"))]
    return {"cut_by_step_limit": cut} if cut else {}


def check_means(table: dict[str, Any]) -> None:
    """A value whose runs gave no finite headline metric measured nothing: an error, not a NaN mean."""
    headline = table["columns"][0]
    for row in table["by_value"]:
        what = f"--sweep {table['field']}={row['value']}" if table["field"] else "the repeated runs"
        if not math.isfinite(row[f"mean_{headline}"]):
            raise DataError(
                f"{what}: no run gave a finite {headline} (constant predictions or too few test images); each "
                "run's figures are in the table",
                path=Path(table["sweep"]) / SWEEP_FILE,
            )
        runs = [r for r in table.get("runs", []) if r["value"] == row["value"]]
        unmeasured = [r for r in runs if not is_measured(r.get(headline))]
        if unmeasured:  # a mean over the other runs would stand for all of them
            seeds = ", ".join(str(r["seed"]) for r in unmeasured)
            raise DataError(
                f"{what}: {len(unmeasured)} of {len(runs)} runs gave no finite {headline} (seed {seeds}): a mean "
                f"over the other {len(runs) - len(unmeasured)} would stand for all {len(runs)}; each run's "
                "figures are in the table",
                path=Path(table["sweep"]) / SWEEP_FILE,
            )


def check_same_run(folder: Path, options: TrainOptions, expected: ResolvedConfig) -> None:
    """A sweep run again reuses its finished runs and resumes the others: only when they were made with the
    configuration, data and splits asked for now. Otherwise the table would mix the two silently."""
    info, saved = load_run_config(get_recipe(options.method), folder)
    now, then = result_options(expected), result_options(saved)
    differ = [f"{key} {then.get(key)!r} (now {now.get(key)!r})" for key in sorted(now) if now.get(key) != then.get(key)]
    # A sweep names its data and splits afresh each time: no --split means the run's must be none too.
    changes = run_data_changes(info, options.data, options.split)
    if "--data" in changes and cache_copy_mismatch(info, changes["--data"][1]) is None:
        del changes["--data"]  # a copy of the run's cache elsewhere (moved): a resumed run records it
    if info.get("split_arg") is not None and options.split is None:
        changes["--split"] = (info.get("split_arg"), None)
    if not changes:  # the data asked for now (or the run's own cache, prepared again since) splits as it did?
        why = _split_set_change(info, options.data)
        if why is not None:
            differ.append(f"its cache split the images otherwise: {why}")
    differ += [f"{option} {str(then)!r} (now {str(now)!r})" for option, (then, now) in changes.items()]
    before = run_choices(info, folder)
    if before is not None and not differ:
        now_choices = choices_on(get_recipe(options.method), expected.params, str(options.data))
        changed = choices_change(before, now_choices, expected.params)
        if changed:  # iqa now makes other labels or views of this data: new runs would train on other ones
            differ.append(f"it trained with {changed}")
    if differ:
        raise ConfigError(
            f"this sweep's run was made with other options: {'; '.join(differ[:4])}"
            f"{'; ...' if len(differ) > 4 else ''}. Give the new sweep its own --name (or --out), or remove "
            "the old sweep folder",
            path=folder,
        )


def _split_set_change(info: dict[str, Any], data: str | Path | None) -> str | None:
    """`split_set_change` of the run's record on the cache named now (else the run's own); None when that
    cache cannot be opened (the training that follows says why)."""
    from iqa_cli.train.data import close_dataset, open_dataset, split_set_change

    try:
        dataset, _ = open_dataset(data if data is not None else str(info.get("cache")))
    except (DataError, OSError):
        return None
    try:
        return split_set_change(info, dataset)
    finally:
        close_dataset(dataset)


def _finished_report(folder: Path) -> dict[str, Any] | None:
    results = folder / RESULT_FILE
    if not (folder / "run.json").is_file() or not results.is_file():
        return None
    if read_run(folder).get("status") != "complete":
        return None
    return json.loads(results.read_text(encoding="utf-8"))


def _mean_of(rows: list[dict[str, Any]], columns: list[str], label: str) -> dict[str, Any]:
    out: dict[str, Any] = {"value": label, "runs": len(rows)}
    out["logistic_fallbacks"] = sum(int(r.get("logistic_fallbacks") or 0) for r in rows)
    for column in columns:
        values = np.asarray([r.get(column) for r in rows if r.get(column) is not None], dtype=np.float64)
        finite = values[np.isfinite(values)] if values.size else values
        out[f"mean_{column}"] = float(finite.mean()) if finite.size else math.nan
        out[f"std_{column}"] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
    return out
