"""`evaluate(...)`: score a dataset's test part(s), or all of another dataset, with trained weights.

Intra-dataset (`--split K|all`): the test part of each split, each with the model trained on that
split when the weights come from a run (one checkpoint per split), or with the given `--weights`.
Cross-dataset (`--cross D`): every image of D, once per trained split's model; the median over
those is the summary, as in the papers. The method's test-time views are used (VT-IQA: centre
crop of the 244 resize and the cell-centred mosaic; a single view, no averaging).
Predictions are on the training label scale (1-5 for VT-IQA); labels are mapped onto it with the
method's mapping for the evaluated dataset.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from iqa_cli.atomic import atomic_path
from iqa_cli.data.authors_splits import (
    INDEX_FILE_PREFIX,
    index_file_name,
    index_file_split,
    read_index_file,
)
from iqa_cli.errors import CheckpointError, ConfigError, DataError
from iqa_cli.progress import NullProgress, Progress
from iqa_cli.textlist import comma_list
from iqa_cli.threads import inference_threads
from iqa_cli.train.choices import changed_inputs, checkpoint_choices, choices_change, choices_of, inputs_text
from iqa_cli.train.config import AMP_MODES, apply_values, check_choices
from iqa_cli.train.data import (
    LAST_EPOCH,
    NO_SELECTION,
    RANDOM_PREFIX,
    TRAINED_BEYOND_SPLIT_KEY,
    DatasetLike,
    close_dataset,
    copies_of_seen,
    dataset_name,
    image_files_identity,
    images_digest,
    left_out_images,
    left_out_note,
    open_dataset,
    read_seen_files,
    reduced_release,
    resolve_split_names,
    split_digest,
    upscaled_views_note,
    view_sides,
    whole_dataset_test,
)
from iqa_cli.train.distributed import resolve_device
from iqa_cli.train.labels import check_label_scale, check_quality_scores, direction_problem, recorded_labels
from iqa_cli.train.metrics import (
    MIN_CORRELATION_IMAGES,
    load_metric_libraries,
    summary_metrics,
    unmeasured_summary_problem,
)
from iqa_cli.train.precision import amp_dtype, low_precision_ties, precision_name
from iqa_cli.train.prefetch import in_thread
from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.recipes.base import Recipe
from iqa_cli.train.scoring import predict_scores
from iqa_cli.train.trainer import selection_label
from iqa_cli.train.views import ViewStore, local_world, preload_budget
from iqa_cli.train.weights import (
    LoadedModel,
    RunWeights,
    TrainedSpec,
    apply_test_overrides,
    build_trained,
    newest_run_weights,
    read_trained,
    run_weights,
)

log = logging.getLogger(__name__)

PER_IMAGE_COLUMNS = ["dataset", "split", "index", "name", "mos", "label", "prediction", "prediction_native", "cache"]


@dataclass
class EvalOptions:
    method: str
    data: str | Path | None = None  # evaluated dataset (intra) / training dataset (cross, weights lookup)
    split: str | None = None
    cross: str | Path | None = None
    weights: str | None = None
    variant: str | None = None
    device: str = "auto"
    amp: str = "auto"
    batch_size: int | None = None
    preload_gb: float | None = None  # GiB; None: 60 % of the available memory
    by_type: bool = False  # also SRCC/PLCC per distortion type (KADID-10k, TID2013, LIVE, CSIQ)
    split_file: str | Path | None = None  # authors' index file (ind_train/ind_test into their [X; Xtest])
    drop_seen: bool = False  # leave out byte-identical copies of each model's training files (instead of refusing)
    overrides: dict[str, Any] = field(default_factory=dict)  # test-time Params (the recipe's eval_params)


@dataclass
class EvalReport:
    method: str
    dataset: str
    cross: bool
    trained_on: str | None
    weights: str
    results: list[dict[str, Any]]
    median: dict[str, float]
    selection: str
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float] = field(default_factory=dict)
    columns: list[str] = field(default_factory=list)  # the metrics a table shows (the recipe's choice)
    per_image: list[dict[str, Any]] = field(default_factory=list, repr=False)
    device: str = ""  # where the forward ran (cpu, cuda:0)
    precision: str = ""  # float32, tf32, bf16 or fp16 (`--amp`)
    cache: str = ""  # the cache file scored (two caches of one dataset name are told apart by it)

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "dataset": self.dataset,
            "cross": self.cross,
            "trained_on": self.trained_on,
            "weights": self.weights,
            "selection": self.selection,
            "results": self.results,
            "median": self.median,
            "mean": self.mean,
            "std": self.std,
            "columns": self.columns,
            "device": self.device,
            "precision": self.precision,
            "cache": self.cache,
        }


WeightsPlan = dict[str | None, str | Path]  # split (None: any split) -> weights (a file, run model or store name)


@dataclass(frozen=True)
class EvalJob:
    """One evaluation: a test part of the evaluated dataset and the weights that score it."""

    split: str  # the evaluated split's name ("all" for a whole dataset)
    weights: str | Path
    test: np.ndarray  # dataset indices
    trained_split: str | None = None  # the split the weights were trained on, when it differs


def _own_cache(run: RunWeights) -> str:
    """The cache a run trained on, to test it on its own splits: the file it recorded, else (moved since)
    the dataset's name, whose cache the split checks then compare with the run's record."""
    cache = run.info.get("cache")
    if cache and Path(str(cache)).is_file():
        return str(cache)
    name = run.info.get("data") or run.info.get("dataset")
    if not name:
        raise ConfigError(f"run {run.shown} records no dataset: name the one to evaluate on with --data")
    return str(name)


def _by_split(by_split: dict[str, Path]) -> WeightsPlan:
    return {split: path for split, path in by_split.items()}


def _weights_plan(recipe: Recipe[Any], options: EvalOptions) -> tuple[WeightsPlan, RunWeights | None]:
    """split (None = any) -> weights; from --weights, or the newest run for method + training dataset."""
    if options.weights is not None:
        from iqa_cli.train.runs import find_weights_run

        if Path(str(options.weights)).expanduser().exists():  # an existing path is one name, commas and all
            names = [str(options.weights)]
        else:
            names = comma_list(str(options.weights), "--weights")
        if len(names) > 1:
            return _joined_runs_plan(names)
        try:  # a run (name or folder): its own kept models, split by split
            root = find_weights_run(options.weights)
        except ConfigError:
            return {None: options.weights}, None
        given = run_weights(root)  # a damaged record is an error of its own, not "no such weights"
        wanted = (options.split or "all").strip().lower()
        if given.unfinished and (wanted == "all" or not given.by_split):
            finished = f"; --split {', '.join(given.by_split)} scores what finished" if given.by_split else ""
            raise CheckpointError(
                f"run {given.run} has not finished ({given.unfinished_text()}): a kept model so far is no result; "
                f"finish it with `iqa train {recipe.name} --resume --out {given.run}`{finished}, or pass a kept "
                "model file as --weights to score it as it stands"
            )
        return _by_split(given.by_split), given
    released = recipe.default_weights(options.variant)
    if released is not None:
        return {None: released}, None
    trained_on = str(options.data) if options.data is not None else None
    run = newest_run_weights(recipe.name, trained_on, with_test_part=options.cross is None)
    if run is None:
        where = f" trained on '{trained_on}'" if trained_on else ""
        raise CheckpointError(
            f"no local {recipe.name} run{where} with a kept model; train one with `iqa train {recipe.name} --data ...` "
            "or pass --weights PATH|NAME"
        )
    return _by_split(run.by_split), run


def _joined_runs_plan(names: list[str]) -> tuple[WeightsPlan, RunWeights]:
    """`--weights a,b,c`: the kept models of runs that each trained some splits of one protocol (a job
    array, one split per job), scored as one run's; refused as `iqa runs combine` refuses them."""
    from iqa_cli.train.combine import check_one_protocol, split_owners
    from iqa_cli.train.runs import find_weights_run

    roots = [find_weights_run(name) for name in names]
    runs = [run_weights(root) for root in roots]
    check_one_protocol(roots, [run.info for run in runs])
    split_owners({run.run: list(run.by_split) for run in runs})
    by_split = {split: path for run in runs for split, path in run.by_split.items()}
    label = ", ".join(str(root) for root in roots)
    cut = [split for run in runs for split in run.cut_short]
    return _by_split(by_split), RunWeights(runs[0].run, runs[0].info, by_split, label=label, cut_short=cut)


def evaluate(options: EvalOptions, progress: Progress | None = None) -> EvalReport:
    load_metric_libraries()
    report = _evaluate(options, progress, checks_only=False)
    assert report is not None
    return report


def check_evaluation(options: EvalOptions) -> None:
    """Everything `evaluate` refuses before it builds a model or makes views (options, the dataset, the
    weights, each test part, copies of training files), without scoring: a command that scores several
    datasets checks them all first, so a refusal comes before the work, not after the others. Its own
    messages are left to the evaluation that follows (they would be said twice)."""
    quiet, log.disabled = log.disabled, True
    try:
        _evaluate(options, NullProgress(), checks_only=True)
    finally:
        log.disabled = quiet


def _evaluate(options: EvalOptions, progress: Progress | None, *, checks_only: bool) -> EvalReport | None:
    recipe = get_recipe(options.method)
    progress = progress or NullProgress()
    if options.amp not in AMP_MODES:
        raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)}, got '{options.amp}'")
    if options.cross is not None and options.split_file is not None:
        raise ConfigError("--split-file names a test part of --data; --cross scores every image: use one")
    if options.batch_size is not None and options.batch_size < 1:
        raise ConfigError(f"--batch-size: must be at least 1, got {options.batch_size}")
    if options.preload_gb is not None and not options.preload_gb >= 0:
        raise ConfigError(f"--preload-gb: must be at least 0, got {options.preload_gb}")
    plan, run = _weights_plan(recipe, options)
    if options.data is None and options.cross is None:
        if run is None:  # a checkpoint file or a store name: no record of a cache to test it on
            raise ConfigError("--data (or --cross) is required with these --weights: the dataset to evaluate on")
        options = dataclasses.replace(options, data=_own_cache(run))
        log.info(f"evaluating on the run's own dataset: {options.data}")
    if run is not None:
        log.info(f"evaluating run {run.shown} (kept models: {', '.join(str(p) for p in plan.values())})")
        if run.cut_short:
            log.warning(
                f"--max-steps stopped the training of split(s) {', '.join(run.cut_short)} of {run.shown} before "
                "the protocol's end: these are a shortened run's models"
            )
    else:
        log.info(f"evaluating weights {plan[None]}")
    target = options.cross if options.cross is not None else options.data
    assert target is not None  # checked above
    raw, cache_path = open_dataset(target)  # a --cross dataset never prepared fails here, in one line
    dataset = raw
    loaded: dict[str, LoadedModel | TrainedSpec] = {}
    try:
        name = dataset_name(dataset, cache_path.stem)
        if options.cross is None:
            split_arg = options.split
            if split_arg is None and run is not None:
                split_arg = "all"  # a run's own splits
            if options.split_file is not None and (run is not None or options.split is not None):
                raise ConfigError("--split-file names the test part itself: use it with --weights, without --split")
            if run is None:  # one model (a file or a store name): test on the split it was trained on
                single = read_trained(recipe, plan[None], variant=options.variant)
                loaded[str(plan[None])] = single  # built by `_run_jobs`, beside its views
                # a copy of the training cache under another name is the training dataset (images digest)
                same = single.meta.get("dataset") if _trained_on_this(single, dataset, name) else name
                index = _read_index(options.split_file) if options.split_file is not None else None
                split_arg = _split_of_model(single, str(same or name), split_arg, index, progress)
                if index is not None:
                    label, test = _index_file_test(dataset, cache_path, index)
                    jobs = [EvalJob(label, plan[None], test)]
                    return _run_jobs(
                        recipe, options, dataset, name, cache_path, jobs, run, progress, loaded, checks_only
                    )
            if run is not None and options.split is None:
                # exactly the splits the run trained, computed ones (vtiqa_chain_3) included
                names = [s for s in plan if s is not None]
            else:
                names = resolve_split_names(dataset, split_arg, source=f"cache {cache_path}")
            if run is not None:
                missing = [s for s in names if s not in plan]
                if missing and options.split is not None:
                    states = "".join(f" {run.unfinished[s]}" for s in missing[:1] if s in run.unfinished)
                    raise CheckpointError(
                        f"run {run.shown} has no kept model for split(s) {', '.join(missing)}{states} (finished: "
                        f"{_trained(plan)})"
                    )
                names = [s for s in names if s in plan]
            jobs = [EvalJob(s, plan[s] if s in plan else plan[None], dataset.split(s)["test"]) for s in names]
        else:
            everything = whole_dataset_test(dataset, recipe.cross_skips_training_images)
            keys: list[str | None]
            if run is None or options.split in (None, "all"):
                keys = list(plan)  # every trained split's model (or the one model given)
            else:
                wanted = [k for k in (options.split, f"{RANDOM_PREFIX}{options.split}") if k in plan]
                if not wanted:
                    raise CheckpointError(
                        f"run {run.shown} has no kept model for split '{options.split}' (finished: {_trained(plan)})"
                    )
                keys = [k for k in wanted[:1]]
            jobs = [EvalJob("all", plan[k], everything, k) for k in keys]
        return _run_jobs(recipe, options, dataset, name, cache_path, jobs, run, progress, loaded, checks_only)
    finally:
        close_dataset(raw)


def _trained(plan: WeightsPlan) -> str:
    return ", ".join(str(split) for split in plan)


def _run_jobs(
    recipe: Recipe[Any],
    options: EvalOptions,
    dataset: DatasetLike,
    name: str,
    cache_path: Path,
    jobs: list[EvalJob],
    run: RunWeights | None,
    progress: Progress,
    loaded_cache: dict[str, LoadedModel | TrainedSpec],
    checks_only: bool = False,
) -> EvalReport | None:
    if recipe.needs_quality_scores:
        check_quality_scores(dataset.attrs, str(cache_path))
    _check_sizes(recipe, jobs, cache_path)  # before any work: a part this small gives no result
    if options.by_type:
        types_of(dataset, name, cache_path)  # before any work: a dataset without types is refused
    specs = {  # what each model says about itself, read once (its header), before any work
        str(job.weights): loaded_cache.get(str(job.weights))
        or read_trained(recipe, job.weights, variant=options.variant)
        for job in jobs
    }
    for spec in specs.values():  # scores that run the other way than this dataset's labels: every sign flips
        _check_direction(recipe, spec, dataset, name, cache_path)
    unchecked = getattr(dataset, "file_digests", None) is None
    if options.cross is not None and unchecked and any(read_seen_files(s.meta) is not None for s in specs.values()):
        log.warning(
            f"{name}: its cache was prepared before iqa recorded file digests, so copies of the files the model "
            f"trained on cannot be found in it; prepare {name} again to have them checked"
        )
    dropped: dict[int, int] = {}
    if options.drop_seen:  # score only what each model never trained on, and say how many were left out
        kept_jobs = []
        for job in jobs:
            seen = copies_of_seen(dataset, read_seen_files(specs[str(job.weights)].meta), job.test)
            kept = replace(job, test=np.setdiff1d(np.asarray(job.test, dtype=np.int64), seen))
            dropped[id(kept)] = int(seen.size)
            kept_jobs.append(kept)
        jobs = kept_jobs
        _check_sizes(recipe, jobs, cache_path, after="leaving out the copies of training files (--drop-seen)")
    if options.cross is None:  # every test part must be the one it was trained against, and unseen by it
        for job in jobs:
            spec = specs[str(job.weights)]
            _check_split_identity(spec, dataset, name, job.split, cache_path)
            _check_unseen_test(spec, dataset, name, job.split, np.asarray(job.test, dtype=np.int64), cache_path)
    # A byte-identical copy of a training image is no unseen image, whatever dataset it sits in.
    copies_scored = {
        id(job): _copies_scored(specs[str(job.weights)], dataset, name, job, options, cache_path) for job in jobs
    }
    if checks_only:
        return None
    device = resolve_device(options.device)
    dtype = amp_dtype(options.amp, device, evaluation=True)
    store: ViewStore | None = None
    store_key: tuple[Any, ...] | None = None
    results: list[dict[str, Any]] = []
    per_image: list[dict[str, Any]] = []
    selections: set[str | None] = set()
    names_list = getattr(dataset, "names", None)
    raw = dataset
    choices_told: set[str] = set()
    upscaling_told: set[str] = set()
    inputs_told: set[tuple[str, str]] = set()
    wrapped_for: tuple[Any, ...] | None = None
    identity: dict[str, str] = {}
    for job in jobs:
        split, weights, indices = job.split, job.weights, np.asarray(job.test, dtype=np.int64)
        trained_split = job.trained_split or split
        known = loaded_cache.get(str(weights)) or specs[str(weights)]
        params = known.params  # checked before a network is built
        if options.batch_size is not None:
            params = apply_values(params, {"eval_batch_size": options.batch_size}, source="--batch-size")
        params = apply_test_overrides(recipe, params, options.overrides)  # checked by the method's rules too
        check_choices(params)
        check_label_scale(params)
        building: Future[LoadedModel] | None = None
        if isinstance(known, TrainedSpec):  # the network is built (init, weights read) while the views are made
            building = in_thread(build_trained, recipe, known, name="iqa-build")
            loaded_cache = {}  # keep one network in memory at a time
        own_dataset = options.cross is not None and _trained_on_this(known, raw, name)
        # --drop-seen left out every file the model trained or selected on, where both sides record digests
        unseen_rest = own_dataset and options.drop_seen and _seen_files_known(known, raw)
        own_images = own_dataset and not unseen_rest
        # `--data X` with a model trained on another dataset: X's test part, scored across datasets
        other_dataset = (
            options.cross is None and bool(known.meta.get("dataset")) and not _trained_on_this(known, raw, name)
        )
        if own_dataset and not any(row.get("own_dataset") for row in results):  # once, not per split
            log.warning(
                f"{known.source} was trained on "
                + _trained_name(
                    known, name, f"split {known.meta['split']}" if known.meta.get("split") else "on images not recorded"
                )
                + ": "
                + (
                    "--drop-seen left its training images out, so this is its own dataset's unseen images, "
                    "no cross-dataset result"
                    if unseen_rest
                    else "--cross scores every image, its training images included, so this is no cross-dataset result"
                )
            )
        wrap_key = tuple(sorted((k, str(v)) for k, v in vars(params).items()))
        if wrapped_for != wrap_key:  # the dataset a method reads may depend on its parameters
            if dataset is not raw:
                close_dataset(dataset)
            dataset, wrapped_for, store = recipe.wrap_dataset(raw, cache_path, params), wrap_key, None
            # What else its numbers depend on (IEIT's enhanced images), once per wrapped dataset.
            identity = {**recipe.data_identity(dataset), **image_files_identity(raw)} if options.cross is None else {}
        given = params
        params = recipe.dataset_params(params, dataset)  # per-dataset choices, for the evaluated dataset
        labels, label_map = recipe.labels(dataset, params, str(cache_path))
        # Its own dataset, scored as the protocol it trained on: then how the cache differs from its training
        # cache is worth saying. Another dataset differs in every way, and is said to be a cross-dataset result.
        own_protocol = options.cross is None and not other_dataset
        stored_as = _stored_differently(known, raw, name) if own_protocol else None
        if name not in upscaling_told:
            upscaling_told.add(name)
            upscaled = upscaled_views_note(raw, view_sides(recipe.view_shapes(params)), recipe.name)
            if upscaled is not None:
                log.warning(upscaled)
            left_out = left_out_note(raw, name)
            if left_out is not None:
                log.warning(left_out)
        changed_since = changed_inputs(known.meta, identity) if own_protocol else []
        if (str(weights), name) not in inputs_told:
            inputs_told.add((str(weights), name))
            other_inputs = recipe.dataset_scoring_note(known.meta, dataset, str(weights))
            if other_inputs is not None and not (own_protocol and changed_since):  # else said below
                log.warning(other_inputs)
        if own_protocol and str(weights) not in choices_told:  # its own dataset: as it trained?
            choices_told.add(str(weights))
            if changed_since:
                log.warning(
                    f"{known.source} trained on {_trained_name(known, name)} with other {inputs_text(changed_since)} "
                    f"than this cache has now (made again since, from another source or with other "
                    "choices): these figures are not those of its training-time tests; make them as it trained, or "
                    "train again"
                )
            if stored_as is not None:
                log.warning(_stored_differently_text(known, name, stored_as))
            changed = choices_change(checkpoint_choices(known.meta), choices_of(given, params, label_map), given)
            if changed:
                log.warning(
                    f"{known.source} trained on {_trained_name(known, name)} with {changed} (the cache was prepared "
                    "again with other options, such as --range, or iqa changed since): these figures are not those of "
                    "its training-time tests; evaluate on the cache it trained on, or train again"
                )
        key = tuple(sorted(recipe.scoring_view_shapes(params).items()))
        if store is None or key != store_key:
            needed = np.unique(np.concatenate([np.asarray(j.test, dtype=np.int64) for j in jobs]))
            store = ViewStore(
                dataset,
                recipe,
                params,
                device,
                needed,
                budget_bytes=preload_budget(options.preload_gb),
                progress=progress,
                scoring=True,
            )
            store_key = key
        if building is not None:
            loaded = building.result()
            loaded.model.to(device).eval()
            loaded_cache = {str(weights): loaded}
        else:
            assert isinstance(known, LoadedModel)
            loaded = known
        progress.start(f"evaluating {name} split {split}", int(indices.size))
        outputs_recipe = recipe.eval_outputs()
        with inference_threads(device, ranks_on_node=local_world()):  # standalone: the forward takes every core
            pred = predict_scores(
                outputs_recipe or recipe,
                params,
                loaded.model,
                store,
                indices,
                device=device,
                dtype=dtype,
                progress=progress,
            )
        progress.finish()
        if outputs_recipe is not None:
            metrics, pred = recipe.outputs_metrics(pred, labels[indices], params)
        bad = ~np.isfinite(np.asarray(pred, dtype=np.float64))
        if bad.any():
            first = names_list[int(indices[np.flatnonzero(bad)[0]])] if names_list is not None else "?"
            raise CheckpointError(
                f"the model predicted non-finite scores for {int(bad.sum())} of {bad.size} images (first: {first}); "
                "its weights are damaged or diverged",
                path=str(loaded.files.get("model", weights)),
            )
        if outputs_recipe is None:
            metrics = recipe.metrics(pred, labels[indices], params)
        tied = low_precision_ties(pred, dtype)
        if tied:
            log.warning(f"split {split}: {tied}; report figures from --amp tf32 (GPUs) or off")
        if options.by_type:
            metrics["by_type"] = metrics_by_type(types_of(dataset, name, cache_path), indices, pred, labels[indices])
        selected_on = loaded.selected_on
        selections.add(selected_on)
        row = {
            "dataset": name,
            "split": split,
            **{k: v for k, v in metrics.items() if not isinstance(v, (dict, list))},
            **({"by_type": metrics["by_type"]} if options.by_type else {}),
            "weights": str(loaded.files.get("model", weights)),
            "trained_on": loaded.meta.get("dataset"),
            "trained_split": loaded.meta.get("split", trained_split if run is not None else None),
            "selected_on": selected_on,
            **({"own_dataset": True} if own_dataset else {}),
            **({"other_dataset": True} if other_dataset else {}),
            **({"includes_training_images": True} if own_images else {}),
            **({"test_copies_of_training": copies_scored[id(job)]} if copies_scored[id(job)] else {}),
            **({"seen_copies_dropped": dropped[id(job)]} if dropped.get(id(job)) else {}),
            **({"trained_resize": stored_as.trained, "resize": stored_as.now} if stored_as else {}),
            **({"left_out_images": left_count} if (left_count := left_out_images(raw)) else {}),
            **({"changed_since_training": ",".join(changed_since)} if changed_since else {}),
        }
        results.append(row)
        scores = label_map.source_scores(dataset, str(cache_path))  # the scale `prediction_native` is on
        native_pred = label_map.to_native(pred)
        for index, value, native in zip(indices, pred, native_pred, strict=True):
            per_image.append(
                {
                    "dataset": name,
                    "split": split,
                    "index": int(index),
                    "name": str(names_list[index]) if names_list is not None else "",
                    "mos": float(scores[index]),
                    "label": float(labels[index]),
                    "prediction": float(value),
                    "prediction_native": float(native),
                    "cache": str(cache_path),
                }
            )
    if dataset is not raw:
        close_dataset(dataset)
    if not results:  # an empty table with exit 0 would read as a result
        raise DataError("the evaluation scored no split (no job matched the weights and splits given)", path=cache_path)
    headline = recipe.report_metrics[0]
    if not any(isinstance(r.get(headline), float) and math.isfinite(r[headline]) for r in results):
        # e.g. constant predictions or a test part of one or two images: NaN everywhere is no result
        sizes = ", ".join(f"{r['split']}: {r.get('n')}" for r in results)
        raise DataError(
            f"no split gave a finite {headline} (test images per split: {sizes}); too few images, or constant "
            "predictions from a damaged model",
            path=cache_path,
        )
    problem = unmeasured_summary_problem(results, headline)
    if problem:  # some splits measured, some not (none measured was refused above)
        raise DataError(
            f"{problem}; score the measured splits alone with --split, and see the others' predictions with "
            "--per-image",
            path=cache_path,
        )
    summary = summary_metrics(results, recipe.metric_names)
    return EvalReport(
        method=recipe.name,
        dataset=name,
        cross=options.cross is not None,
        trained_on=results[0]["trained_on"] if results else None,
        weights=run.shown if run is not None else str(options.weights or ""),
        results=results,
        median=summary["median"],
        mean=summary["mean"],
        std=summary["std"],
        columns=list(recipe.report_metrics),
        selection=_selection_text(selections),
        per_image=per_image,
        device=str(device),
        precision=precision_name(dtype),
        cache=str(cache_path),
    )


def types_of(dataset: DatasetLike, name: str, cache_path: Path) -> list[str | None]:
    """The distortion type of every image of the evaluated dataset, from its names."""
    from iqa_cli.data.distortion_types import distortion_types

    names = getattr(dataset, "names", None)
    types = distortion_types(name, [str(n) for n in names]) if names is not None else None
    if types is None:
        raise ConfigError(
            f"--by-type: the image names of dataset '{name}' carry no distortion types "
            "(KADID-10k, TID2013, LIVE and CSIQ caches do)"
        )
    if not any(types):
        raise DataError(f"--by-type: no image name of '{name}' follows the dataset's official naming", path=cache_path)
    return types


def metrics_by_type(
    types: list[str | None], indices: np.ndarray, pred: np.ndarray, labels: np.ndarray
) -> dict[str, dict[str, float]]:
    """n, SRCC and PLCC (raw predictions, as the authors report per type) for each type present."""
    from iqa_cli.train.metrics import pearson, spearman

    groups: dict[str, list[int]] = {}
    for position, index in enumerate(indices):
        kind = types[int(index)]
        if kind is not None:
            groups.setdefault(kind, []).append(position)
    out = {}
    for kind in sorted(groups):
        rows = np.asarray(groups[kind])
        enough = rows.size >= MIN_CORRELATION_IMAGES
        out[kind] = {
            "n": int(rows.size),
            "srcc": spearman(pred[rows], labels[rows]) if enough else float("nan"),
            "plcc": pearson(pred[rows], labels[rows]) if enough else float("nan"),
        }
    return out


def _split_of_model(
    loaded: LoadedModel | TrainedSpec,
    dataset: str,
    split_arg: str | None,
    index: IndexFile | None,
    progress: Progress,
) -> str | None:
    """The split to test a single model on: by default the one it was trained on (when it was trained
    on this dataset), so its own training images are never scored as test images; a different
    `--split` is allowed where its test part holds none of them (`_check_unseen_test`). A model whose
    test part is unknown is refused unless the user names one (`--split`, `--split-file`), and so is a
    release whose authors published its test indices in a file that was not given."""
    trained_on, trained_split = loaded.meta.get("dataset"), loaded.meta.get("split")
    weights = loaded.source
    if trained_split and trained_split.startswith(INDEX_FILE_PREFIX) and trained_on == dataset:
        wanted = trained_split[len(INDEX_FILE_PREFIX) :]
        if index is None:  # its training images are ind_train of that file: no other part is known unseen
            raise ConfigError(
                f"{weights}: its authors trained it on ind_train and tested it on ind_test of {wanted} (published "
                f"with the method's code), so no split of this cache is known to be unseen; pass --split-file "
                f"PATH/{wanted} (or --cross DATA to score every image on purpose)"
            )
        if index.name != wanted:  # its name is the authors' when it holds their indices, whatever it is called
            raise ConfigError(f"--split-file: {weights} was tested on {wanted}, not {index.name}")
        return split_arg
    if index is not None:
        return None
    if trained_on == dataset and not trained_split:  # an authors' release whose split files are not public
        if split_arg is None:
            raise ConfigError(
                f"{weights}: it was trained on {dataset}, but on which of its images is not recorded, so no test part "
                "is known to be unseen; pass --split NAME to choose one (it may hold its training images), or "
                "--cross OTHER_DATA to score another dataset"
            )
        log.warning(
            f"{weights} does not record which images of {dataset} it trained on; split {split_arg} may hold some"
        )
        return split_arg
    if not trained_on:
        if split_arg is None:
            raise ConfigError(
                f"{weights}: the images this model was trained on are not recorded, so no test part is known to be "
                "unseen; pass --split NAME (or --split-file FILE) to choose one, or --cross DATA to score every image "
                "on purpose"
            )
        log.warning(f"{weights} does not record its training images; split {split_arg} may hold some")
        return split_arg
    if trained_on != dataset or not trained_split:
        return split_arg
    if split_arg is None:
        log.info(f"testing on split {trained_split}, the split this model was trained on")
        return trained_split
    return split_arg  # a test part holding its training images is refused by `_check_unseen_test`


def _check_direction(
    recipe: Recipe[Any], spec: LoadedModel | TrainedSpec, dataset: DatasetLike, name: str, cache_path: Path
) -> None:
    """Refuse a model whose predictions run the other way than the labels this dataset gives it (a model
    trained with `--label-scale native` on a DMOS set, scored against MOS)."""
    if not recipe.needs_quality_scores:
        return
    label_map = recipe.directed_label_map(dataset, recipe.dataset_params(spec.params, dataset), str(cache_path))
    problem = direction_problem(
        recorded_labels(spec.meta), label_map, spec.source, name, advice="score a model trained"
    )
    if problem is not None:
        raise DataError(problem, path=cache_path)


def _check_split_identity(
    loaded: LoadedModel | TrainedSpec, dataset: DatasetLike, name: str, split: str, cache_path: Path
) -> None:
    """Refuse to score a model on a split of the same name whose images differ from those it was trained
    and tested on (the cache was prepared again, e.g. with another --split-seed, under its name or another)."""
    recorded = loaded.meta.get("split_digest")
    if not recorded or loaded.meta.get("split") != split or not _trained_on_this(loaded, dataset, name):
        return
    current = split_digest(dataset, dataset.split(split))
    if current != recorded:
        raise DataError(
            f"split {split} of this cache holds other images than {loaded.source} was trained on (cache digest "
            f"{current}, the model recorded {recorded}; the cache was prepared again?): evaluate with the cache it "
            "was trained on, or --cross to score every image on purpose",
            path=cache_path,
        )


def _check_unseen_test(
    loaded: LoadedModel | TrainedSpec, dataset: DatasetLike, name: str, split: str, test: np.ndarray, cache_path: Path
) -> None:
    """Refuse to score a model on the test part of another split of the dataset it was trained on when
    that part holds images it trained on, or when which images it trained on cannot be told: such a
    figure is no test result. `--cross` scores every image on purpose, and says so."""
    beyond = loaded.meta.get(TRAINED_BEYOND_SPLIT_KEY)
    if beyond and _trained_on_this(loaded, dataset, name):
        raise DataError(
            f"{loaded.source} trained on images from anywhere in {name} ({beyond}), so no test part of it is unseen "
            f"by it, split {split}'s included; its own test figures are those of its run (the images it did not "
            f"select), or use --cross {name} to score every image on purpose",
            path=cache_path,
        )
    trained_split = loaded.meta.get("split")
    if not trained_split or trained_split == split or trained_split.startswith(INDEX_FILE_PREFIX):
        return
    if not _trained_on_this(loaded, dataset, name):  # another dataset (a copy of it counts as the same)
        return
    hint = f"test it on split {trained_split} (the default), or use --cross {name} to score every image on purpose"
    try:
        parts: dict[str, np.ndarray] | None = dataset.split(trained_split)
    except DataError:
        parts = None
    recorded = loaded.meta.get("split_digest")
    if parts is None or (recorded and split_digest(dataset, parts) != recorded):
        where = "is not in this cache" if parts is None else "holds other images in this cache"
        raise DataError(
            f"{loaded.source} was trained on split {trained_split} of {name}, which {where}, so the test part of "
            f"split {split} may hold its training images; {hint}",
            path=cache_path,
        )
    seen = np.concatenate([np.asarray(v, dtype=np.int64) for part, v in parts.items() if part != "test"])
    overlap = int(np.intersect1d(seen, test).size)
    if overlap:
        raise DataError(
            f"{overlap} of the {test.size} test images of split {split} are images {loaded.source} was trained on "
            f"(split {trained_split}): that is no test result; {hint}",
            path=cache_path,
        )
    ref_ids = np.asarray(getattr(dataset, "ref_ids", np.empty(0)), dtype=np.int64)
    # Full-reference datasets: a reference is content, so its other distortions are no unseen images.
    if ref_ids.size and ref_ids.size == len(dataset) and (ref_ids[seen] >= 0).any():
        shared = np.isin(ref_ids[test], ref_ids[seen][ref_ids[seen] >= 0])
        if shared.any():
            raise DataError(
                f"{int(shared.sum())} of the {test.size} test images of split {split} show references "
                f"{loaded.source} was trained on (split {trained_split}; other distortions of the same scenes): "
                f"that is no test result; {hint}",
                path=cache_path,
            )
    log.info(f"split {split}'s test part holds none of the images {loaded.source} was trained on")


def _check_sizes(recipe: Recipe[Any], jobs: list[EvalJob], cache_path: Path, *, after: str = "") -> None:
    """Refuse a part too small to give a result (a correlation needs `recipe.min_test_images`)."""
    for job in jobs:
        if len(job.test) < max(recipe.min_test_images, 1):
            what = "the dataset" if job.split == "all" else f"the test part of split '{job.split}'"
            why = (
                f", and a correlation needs at least {recipe.min_test_images} (two points correlate +-1 whatever the "
                "model)"
                if recipe.min_test_images > 1
                else ""
            )
            raise DataError(
                f"{what} holds {len(job.test)} image(s){f' after {after}' if after else ''}{why}", path=cache_path
            )


def _copies_scored(
    loaded: LoadedModel | TrainedSpec,
    dataset: DatasetLike,
    name: str,
    job: EvalJob,
    options: EvalOptions,
    cache_path: Path,
) -> int:
    """How many images `job` scores are byte-identical copies of images the model trained on, or distortions of
    them (its checkpoint's `seen_files` against the cache's `file_digests` and `reference_digests`; 0 when
    neither side records them).

    On the test part of the model's own split (an authors' or official split that puts a file on both
    sides) they are the protocol's, reported beside the figures, as training reported them. `--cross`
    onto the training data itself is already said to be no cross-dataset result. Anywhere else (another
    dataset, another split) they are refused: the figure would look like an unseen-data result."""
    copies = copies_of_seen(dataset, read_seen_files(loaded.meta), job.test)
    if not copies.size:
        return 0
    own_dataset = _trained_on_this(loaded, dataset, name)
    if options.cross is not None and own_dataset:
        return int(copies.size)
    names = getattr(dataset, "names", None)
    example = ""
    if names is not None:
        example = " (" + ", ".join(str(names[int(i)]) for i in copies[:3]) + (", ...)" if copies.size > 3 else ")")
    if options.cross is None and own_dataset and loaded.meta.get("split") == job.split:
        log.warning(
            f"split {job.split}: {copies.size} of the {len(job.test)} test images are byte-identical copies of "
            f"images {loaded.source} was trained on{example}; the split's figures include them"
        )
        return int(copies.size)
    what = "images of" if options.cross is not None else f"test images of split {job.split} of"
    raise DataError(
        f"{copies.size} of the {len(job.test)} {what} {name} are byte-identical copies of images {loaded.source} "
        f"was trained on, or distortions of them{example}: that is no unseen-data result; prepare {name} without "
        "them, or add --drop-seen to score the rest",
        path=cache_path,
    )


def _seen_files_known(loaded: LoadedModel | TrainedSpec, dataset: DatasetLike) -> bool:
    """Whether the copies of what `loaded` trained on can be told in `dataset` (both record file digests)."""
    return read_seen_files(loaded.meta) is not None and getattr(dataset, "file_digests", None) is not None


class StoredAs(NamedTuple):
    """How a model's own dataset was stored when it trained, and how this cache stores it."""

    trained: str  # the resize policy it trained on (for an authors' release, how their prep read the files)
    now: str  # this cache's policy, and for a release, the smaller official release it was made from
    full_side: int | None  # for a release on a smaller release: the full-size files' largest side


def _stored_differently(loaded: LoadedModel | TrainedSpec, dataset: DatasetLike, name: str) -> StoredAs | None:
    """How the cache stores the model's own dataset when that differs from what it trained on (prepared
    again with another --size), or, for an authors' release, from how their prep read it (another size, or
    a smaller official release of the files); None when they agree, or when the checkpoint does not say
    (checkpoints older than the record, releases imported before it)."""
    trained = loaded.meta.get("resize")
    if not trained or not _trained_on_this(loaded, dataset, name):
        return None
    now = str(dataset.attrs.get("resize", ""))
    reduced = reduced_release(dataset) if "source_sha256" in loaded.meta else None
    if now == str(trained) and reduced is not None:  # an authors' release: they read the full-size files
        now = f"{now}, from a {reduced[0]} px release"
    return StoredAs(str(trained), now, reduced[1] if reduced else None) if now != str(trained) else None


def _stored_differently_text(loaded: LoadedModel | TrainedSpec, name: str, stored: StoredAs) -> str:
    trained, now = stored.trained, stored.now
    option = _prepare_option(trained)
    if "source_sha256" in loaded.meta:  # an authors' file (`iqa weights import`): their prep made its inputs
        made = "from the original files" if trained == "none" else f"from images stored at resize {trained}"
        full = stored.full_side
        source = f"from its full-size files ({full} px) with {option}" if full else f"with {option}"
        return (
            f"{loaded.source} is its authors' model, trained and tested on views they resized {made} of {name}; "
            f"this cache stores them at resize {now}, so its views are other pixels and these figures are not "
            f"the authors'; prepare {name} {source} for theirs"
        )
    return (
        f"{loaded.source} trained on {_trained_name(loaded, name)} stored at resize {trained}, and this cache stores "
        f"it at resize {now}: these figures are not those of its training-time tests; evaluate on a cache prepared "
        f"as it trained ({option})"
    )


def _prepare_option(policy: str) -> str:
    """The `iqa prepare` option that stores images at `policy` ('none', 'WxH', 'short:S')."""
    if policy.startswith("short:"):
        return f"--short-side {policy.split(':', 1)[1]}"
    return f"--size {policy}"


def _trained_name(loaded: LoadedModel | TrainedSpec, name: str, detail: str | None = None) -> str:
    """The dataset a model trained on, where `_trained_on_this` found it in the cache `name`, with `detail`
    in brackets; under another name (a copy, the same images prepared again), both names."""
    trained = str(loaded.meta.get("dataset") or name)
    said = [part for part in (detail, None if trained == name else f"as {name} here") if part]
    return f"{trained} ({'; '.join(said)})" if said else trained


def _trained_on_this(loaded: LoadedModel | TrainedSpec, dataset: DatasetLike, name: str) -> bool:
    """Whether a --cross dataset is the one the model was trained on: the same name, the same images
    (a copy of the cache under another name, whatever its splits), or a split of the same name holding
    the same images."""
    if loaded.meta.get("dataset") == name:
        return True
    if loaded.meta.get("images_digest") and loaded.meta.get("images_digest") == images_digest(dataset):
        return True
    split, recorded = loaded.meta.get("split"), loaded.meta.get("split_digest")
    if not split or not recorded or split not in dataset.split_names():
        return False
    return bool(split_digest(dataset, dataset.split(split)) == recorded)


class IndexFile(NamedTuple):
    """A `--split-file`, read once: its indices and the name its test part is reported under."""

    path: Path
    name: str  # `index_file_name`: the authors' file name where it holds their indices
    ind_train: np.ndarray
    ind_test: np.ndarray


def _read_index(split_file: str | Path) -> IndexFile:
    ind_train, ind_test = read_index_file(split_file)
    return IndexFile(Path(split_file), index_file_name(split_file, ind_train, ind_test), ind_train, ind_test)


def _index_file_test(dataset: DatasetLike, cache_path: Path, index: IndexFile) -> tuple[str, np.ndarray]:
    """(split label, test indices) of an authors' index file on this cache."""
    image_list = getattr(dataset, "image_list", None)
    if image_list is None:
        raise ConfigError("--split-file needs a prepared cache (it addresses the cache's image list)")
    ind_train, ind_test, split_file = index.ind_train, index.ind_test, index.path
    n = len(dataset)
    if ind_train.size + ind_test.size != n:
        raise DataError(
            f"--split-file {Path(split_file).name}: indexes {ind_train.size} + {ind_test.size} images, the cache "
            f"holds {n} (was it made for this dataset, with every image?)",
            path=cache_path,
        )
    parts = index_file_split(image_list(), ind_train, ind_test)
    return f"{INDEX_FILE_PREFIX}{index.name}", parts["test"]


def _selection_text(selections: set[str | None]) -> str:
    known = {s for s in selections if s}
    if not known:
        return "kept model selection unknown (weights without iqa metadata)"
    if "test" in known:  # the optimistic habit is said whatever the other models did
        return "kept model selected on the " + selection_label("test")
    if known == {"val"}:
        return "kept model selected on the " + selection_label("val")
    if known == {NO_SELECTION}:
        return "kept model of the last epoch (every image trains; nothing selects)"
    if known == {LAST_EPOCH}:
        return "model of the last finished epoch (last.pt, a resume state; not a kept model)"
    return "models chosen in different ways: " + ", ".join(sorted(known))


def write_per_image(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=PER_IMAGE_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.9g}" if isinstance(v, float) else v) for k, v in row.items()})


def write_metrics_csv(path: Path, reports: list[EvalReport]) -> None:
    """One row per evaluated split and the median/mean/std rows of each report (several: `--cross a,b`)."""
    metric_names = list(dict.fromkeys(k for report in reports for k in report.median if k != "splits"))
    columns = ["dataset", "split", "n", *metric_names, "logistic_fit", "trained_on", "trained_split", "selected_on",
               "weights", "own_dataset", "other_dataset", "includes_training_images", "test_copies_of_training",
               "seen_copies_dropped", "trained_resize", "resize", "changed_since_training",
               "left_out_images", "cache"]  # fmt: skip
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for report in reports:
            for row in report.results:
                writer.writerow({**row, "cache": report.cache})
            for label, values in (("median", report.median), ("mean", report.mean), ("std", report.std)):
                if values:
                    summary = {"dataset": report.dataset, "split": label, "n": "", **values}
                    writer.writerow({**summary, "cache": report.cache})
