"""`train(...)`: resolve the configuration, open the data, train one or every split, summarise.

This is what `iqa train <method>` calls. It owns the run folder (configuration, run.json status,
results with the median over splits) and hands each split to the engine's `Trainer`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from iqa_cli.errors import ConfigError, DataError
from iqa_cli.locks import hold
from iqa_cli.memory import available_memory_bytes
from iqa_cli.progress import NullProgress, Progress
from iqa_cli.train.choices import changed_inputs, check_same_choices, choices_of, data_choices, inputs_text
from iqa_cli.train.config import (
    EngineConfig,
    apply_values,
    check_choices,
    coerce,
    parse_watch,
    read_toml,
    split_by_owner,
    to_plain,
    write_config,
    write_json,
)
from iqa_cli.train.data import (
    NO_SELECTION,
    SEEN_FILES_KEY,
    DatasetLike,
    SplitParts,
    cache_identity,
    close_dataset,
    copies_of_seen,
    dataset_name,
    image_files_identity,
    images_digest,
    is_whole_split,
    left_out_images,
    left_out_note,
    make_parts,
    open_dataset,
    pack_seen_files,
    resolve_split_names,
    same_cache_identity,
    seen_files,
    split_digest,
    split_set_change,
    stored_split_digests,
    upscaled_views_note,
    view_sides,
)
from iqa_cli.train.distributed import RUN_FOLDER_ADVICE, DistContext, init_distributed, resolve_device
from iqa_cli.train.engine import (
    FitContext,
    StopRequest,
    TrainingDiverged,
    TrainingInterrupted,
    fit_split,
    over_time_limit,
    stop_exit_code,
    time_limit_clock,
)
from iqa_cli.train.labels import check_label_scale
from iqa_cli.train.metrics import load_metric_libraries, summary_metrics, unmeasured_summary_problem
from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.recipes.base import BaseParams, Recipe
from iqa_cli.train.runs import (
    LAST,
    RESULT_FILE,
    check_new_run_folder,
    effective_status,
    newest_run,
    now,
    read_run,
    remove_unstarted_run,
    run_root,
    split_dir,
    write_run,
)
from iqa_cli.train.state import check_resumed_identity, resumable_meta
from iqa_cli.train.watch import WatchedDataset, check_measured, median_over_rounds, open_watched

log = logging.getLogger(__name__)

# Options that may differ when a run is resumed: they change where/how fast it runs, not what it learns.
RESUMABLE_CHANGES = {"device", "log_every", "preload_gb", "time_limit"}
SELECTION_LABELS = {
    "val": "validation part of the training split",
    "test": "test part (paper habit; optimistic)",
    "none": "nothing: every image trains, the last epoch is kept",
}


def selection_label(select_on: str) -> str:
    return SELECTION_LABELS[select_on]


def run_selection(split_names: list[str], select_on: str) -> dict[str, str]:
    """What chose a run's kept models (`selected_on` and its `selection` words, as run.json and the report
    record them): `--select-on`, except in whole-dataset rounds, where nothing is held out and the last
    epoch's model is kept whatever `--select-on` says."""
    chosen = NO_SELECTION if split_names and all(is_whole_split(s) for s in split_names) else select_on
    return {"selected_on": chosen, "selection": selection_label(chosen)}


@dataclass
class TrainOptions:
    """A training request as the CLI (or a script) states it; unset options are None."""

    method: str
    data: str | Path | None = None
    split: str | None = None
    config_file: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # engine + recipe option values given explicitly
    tiny: bool | None = None
    out: Path | None = None
    name: str | None = None
    resume: bool = False


@dataclass
class ResolvedConfig:
    engine: EngineConfig
    params: BaseParams
    tiny: bool


def resolve_config(
    recipe: Recipe[Any], *, tiny: bool | None, config_file: Path | None, overrides: dict[str, Any]
) -> ResolvedConfig:
    """Protocol defaults < --tiny sizes < TOML file < explicit options. `tiny` None: the TOML file's
    `tiny` decides (a run's resolved config.toml, --tiny runs included, is accepted back as it is)."""
    file_values = read_toml(config_file) if config_file is not None else {}
    if file_values.get("tiny") is not None:
        # As every option: `tiny = "false"` is false (Python's bool() of the text was true, a test-sized
        # network trained under the method's name), and a value that is no yes/no names the file.
        try:
            file_values["tiny"] = coerce("tiny", bool, file_values["tiny"])
        except ConfigError as exc:
            raise ConfigError(str(exc), path=config_file) from None
    file_tiny = file_values.get("tiny")
    if tiny is None:
        tiny = bool(file_tiny) if file_tiny is not None else False
    file_values = {k: v for k, v in file_values.items() if k != "tiny" or v != tiny}
    params: BaseParams = recipe.Params()
    if tiny:
        params = apply_values(params, dict(recipe.tiny_params), source=f"{recipe.name} tiny settings")
    engine = EngineConfig()
    layers = []
    if config_file is not None:
        layers.append((file_values, str(config_file)))
    layers.append(({k: v for k, v in overrides.items() if v is not None}, "options"))
    for values, source in layers:
        values = dict(values)
        method = values.pop("method", None)
        if method is not None and method != recipe.name:  # another method's config.toml: its keys mean other things
            raise ConfigError(f"{source}: method = {method!r}, but this trains '{recipe.name}'")
        tiny_value = values.pop("tiny", None)
        if tiny_value is not None and bool(tiny_value) != tiny:
            raise ConfigError(f"{source}: tiny = {str(bool(tiny_value)).lower()} contradicts the command line's --tiny")
        try:
            engine_values, param_values = split_by_owner(values, EngineConfig, type(params))
            engine = apply_values(engine, engine_values, source=source)
            params = apply_values(params, param_values, source=source)
        except ConfigError as exc:  # a bad value in a config file: name the file, not only the key
            if source == "options" or str(exc).startswith(f"{source}:"):
                raise
            raise ConfigError(str(exc), path=source) from None
        if source == "options" and values.get("lr") is not None and values.get("lr_phases") is not None:
            # --lr replaces the phases; a config file may hold both (a run's resolved config.toml does)
            raise ConfigError("--lr and --lr-phases both set the learning rate; give one")
    engine.validate()
    check_choices(params)
    check_label_scale(params)
    recipe.check_params(params)
    _refuse_idle_options(recipe, engine, params, overrides)
    return ResolvedConfig(engine, params, tiny)


def _refuse_idle_options(
    recipe: Recipe[Any], engine: EngineConfig, params: BaseParams, overrides: dict[str, Any]
) -> None:
    """An option given on the command line that these settings never read (a config file may hold
    them: a stage-1 run's config.toml is a fine start for stage 2)."""
    if overrides.get("val_fraction") is not None and engine.select_on == "test":
        raise ConfigError(
            "--val-fraction has no effect with --select-on test (the whole training part trains and the test "
            "part selects the kept model); leave it out"
        )
    recipe.refuse_idle(params, overrides)


def config_sections(method: str, resolved: ResolvedConfig) -> dict[str, dict[str, Any]]:
    return {
        "method": {"method": method, "tiny": resolved.tiny},
        "engine": to_plain(resolved.engine),
        f"{method} protocol": to_plain(resolved.params),
    }


def planned_config(options: TrainOptions) -> dict[str, Any]:
    """What `iqa train` would run, without creating a run: every option, the data file and its splits,
    the device and the precision (`--print-config`). What `iqa train` would refuse before training (a
    split the cache lacks, options a resume may not change) is refused here too: a pre-flight check."""
    from iqa_cli.train.precision import amp_dtype

    recipe = get_recipe(options.method)
    if options.resume:
        root, info, resolved = _resumed(recipe, options)
        data, split = info.get("cache"), info.get("split_arg")
    else:
        resolved = resolve_config(
            recipe, tiny=options.tiny, config_file=options.config_file, overrides=options.overrides
        )
        data, split = options.data, options.split
        root = None
    recipe.check_training(resolved.params)
    device = resolve_device(resolved.engine.device, _local_rank())
    dtype = amp_dtype(resolved.engine.amp, device)
    eval_dtype = amp_dtype(resolved.engine.eval_amp, device, evaluation=True)
    cache_path, splits, choices = None, None, None
    if data is not None:
        raw, cache_path = open_dataset(data)
        try:
            splits = resolve_split_names(raw, split, source=f"cache {cache_path}")
            choices = data_choices(recipe, resolved.params, raw, str(cache_path))
        finally:
            close_dataset(raw)
        if root is not None:
            check_same_choices(info, root, choices, resolved.params, cache_path)
    return {
        "method": recipe.name,
        "data": str(cache_path) if cache_path is not None else None,
        "split": split,
        "splits": splits,
        "run": str(root) if root is not None else None,
        "device": str(device),
        # float32 unless autocast: bf16 / fp16 differ from the authors' float32 (see docs/protocols.md)
        "precision": {"train": _precision(dtype), "eval": _precision(eval_dtype)},
        "sections": config_sections(recipe.name, resolved),
        # what this cache makes of the options: the labels, and the options the dataset resolves
        "on_data": None
        if choices is None
        else {"labels": choices.labels.description, "label_column": choices.labels.column, "params": choices.params},
    }


def _precision(dtype: Any) -> str:
    return "float32" if dtype is None else f"{str(dtype).replace('torch.', '')} autocast"


def load_run_config(recipe: Recipe[Any], root: Path) -> tuple[dict[str, Any], ResolvedConfig]:
    info = read_run(root)
    if info.get("method") != recipe.name:
        raise ConfigError(f"run is for method '{info.get('method')}', not '{recipe.name}'", path=root)
    saved = info.get("config") or {}
    tiny = bool(saved.get("tiny", False))
    engine = apply_values(EngineConfig(), saved.get("engine", {}), source=str(root / "run.json"))
    params = apply_values(
        recipe.Params(), recipe.saved_params(dict(saved.get("params", {}))), source=str(root / "run.json")
    )
    return info, ResolvedConfig(engine, params, tiny)


def result_options(config: ResolvedConfig) -> dict[str, Any]:
    """The options that shape a run's result (where it runs and how often it logs do not): what two runs
    must share to be one protocol (a sweep's kept run, `iqa runs combine`)."""
    values = {"tiny": config.tiny, **to_plain(config.engine), **to_plain(config.params)}
    return {key: value for key, value in values.items() if key not in RESUMABLE_CHANGES}


def _check_resume_overrides(saved: ResolvedConfig, options: TrainOptions) -> None:
    given = {k: v for k, v in options.overrides.items() if v is not None}
    if options.config_file is not None:
        given.update(read_toml(options.config_file))
    conflicts = []
    current = {**to_plain(saved.engine), **to_plain(saved.params)}
    for key, value in given.items():
        if key in RESUMABLE_CHANGES or key == "epochs" or key not in current:
            continue
        if to_plain(value) != current[key]:
            conflicts.append(key)
    if options.tiny is not None and options.tiny != saved.tiny:
        conflicts.append("tiny")
    if conflicts:
        raise ConfigError(
            f"--resume continues a run with its saved configuration; these options differ from it: "
            f"{', '.join(sorted(conflicts))} (drop them, or start a new run)"
        )


def run_data_changes(info: dict[str, Any], data: str | Path | None, split: str | None) -> dict[str, tuple[Any, Any]]:
    """`{"--data": (the run's cache, the given one), "--split": (...)}` for each of `data` and `split` that is
    given and is not what the run recorded (a cache is the same file by any name or path)."""
    from iqa_cli.home import resolve_cache

    changes: dict[str, tuple[Any, Any]] = {}
    if data is not None:
        given = resolve_cache(str(data)).resolve()
        if Path(str(info.get("cache"))).resolve() != given:
            changes["--data"] = (info.get("cache"), given)
    if split is not None and str(split) != str(info.get("split_arg")):
        changes["--split"] = (info.get("split_arg"), split)
    return changes


def _check_resume_data(info: dict[str, Any], options: TrainOptions, root: Path) -> None:
    """`--data` and `--split` given with --resume must be the run's own: the run continues on those. A
    `--data` at another path is the run's own when it is a copy of its cache (moved, or copied to a
    faster disk): then the run continues on it, and run.json records the new path."""
    changes = run_data_changes(info, options.data, options.split)
    differ = []
    if "--data" in changes:
        recorded, given = changes["--data"]
        why = cache_copy_mismatch(info, given)
        if why is None:
            log.info(f"{root}: continuing on {given}, a copy of the run's cache {recorded} ({_SAME_CACHE})")
            info["cache"] = str(given)
        else:
            differ.append(f"--data (the run's cache is {recorded}, given {given}: {why})")
    elif not Path(str(info.get("cache"))).is_file():
        hint = (
            "give it at its new place with --data"
            if isinstance(info.get("cache_identity"), dict)
            else "this run's record predates moved caches, so put the cache back at that path"
        )
        raise DataError(f"the run's cache {info.get('cache')} is gone (moved or deleted): {hint}", path=root)
    if "--split" in changes:
        differ.append("--split (the run's is {!r}, given {!r})".format(*changes["--split"]))
    if differ:
        raise ConfigError(
            f"--resume continues a run on its own data and splits; these differ: {'; '.join(differ)} (drop them, "
            "or start a new run)",
            path=root,
        )


_SAME_CACHE = "the same images, scores and size policy"


def cache_copy_mismatch(info: dict[str, Any], given: Path) -> str | None:
    """None when `given` is a copy of the run's cache by `cache_identity`, else why it is not one."""
    recorded = info.get("cache_identity")
    if not isinstance(recorded, dict):
        return "this run's record predates moved caches, so only its own path is accepted"
    raw, _ = open_dataset(given)
    try:
        found = cache_identity(raw)
    finally:
        close_dataset(raw)
    if same_cache_identity(found, recorded):
        return None
    if found["resize"] != recorded.get("resize"):
        return f"prepared with size policy {found['resize']!r}, the run's with {recorded.get('resize')!r}"
    if found["images_digest"] == recorded.get("images_digest") and found.get("files_digest"):
        return "the same names and scores, other image files (prepared again from edited files?)"
    return "other images or scores"


def _extend_epochs(
    resolved: ResolvedConfig, info: dict[str, Any], epochs: int | None, root: Path
) -> tuple[ResolvedConfig, dict[str, Any]]:
    """`--resume --epochs N`: a finished or stopped run continues to N epochs (the one option a resume may
    change); each split goes on from its `last.pt`."""
    saved = int(resolved.params.epochs)
    if epochs is None or int(epochs) == saved:
        return resolved, info
    epochs = int(epochs)
    if epochs < saved:
        raise ConfigError(f"--epochs {epochs}: the run was set to {saved} epochs; --resume can only extend it")
    params = apply_values(resolved.params, {"epochs": epochs}, source="--epochs")
    info["config"]["params"]["epochs"] = epochs
    for split, state in (info.get("splits") or {}).items():
        if (
            isinstance(state, dict)
            and state.get("status") == "complete"
            and (split_dir(root, split) / "last.pt").is_file()
        ):
            state["status"] = "interrupted"  # resumes from its last.pt with the new cap
    if info.get("status") == "complete":
        info["status"] = "interrupted"
    return dataclasses.replace(resolved, params=params), info


def _resumed(recipe: Recipe[Any], options: TrainOptions) -> tuple[Path, dict[str, Any], ResolvedConfig]:
    """The run `--resume` continues, its record, and its configuration with what a resume may change
    (refused where the options ask for what it may not)."""
    root = _resume_root(recipe, options)
    info, resolved = load_run_config(recipe, root)
    _check_resume_overrides(resolved, options)
    _check_resume_data(info, options, root)
    changes = {k: v for k, v in options.overrides.items() if v is not None and k in RESUMABLE_CHANGES}
    resolved = dataclasses.replace(resolved, engine=apply_values(resolved.engine, changes, source="options"))
    resolved, info = _extend_epochs(resolved, info, options.overrides.get("epochs"), root)
    return root, info, resolved


def _resume_root(recipe: Recipe[Any], options: TrainOptions) -> Path:
    if options.out is not None or options.name is not None:
        root = run_root(method=recipe.name, dataset="", name=options.name, out=options.out)
        if not (root / "run.json").is_file():
            raise ConfigError("--resume: no run to continue here (no run.json)", path=root)
        return root
    dataset = str(options.data) if options.data is not None else None
    newest = newest_run(recipe.name, dataset, unfinished=True)
    if newest is None:
        what = f" on '{dataset}'" if dataset else ""
        raise ConfigError(f"--resume: no unfinished {recipe.name} run{what} (name one with --name or --out)")
    return newest


def train(options: TrainOptions, progress: Progress | None = None) -> dict[str, Any] | None:
    """Train `options.method`; returns the summary also written to `results.json` (None on DDP ranks > 0)."""
    with time_limit_clock():  # `--time-limit` covers every split (and, in a sweep, every run)
        return _train(options, progress)


def _train(options: TrainOptions, progress: Progress | None) -> dict[str, Any] | None:
    recipe = get_recipe(options.method)
    load_metric_libraries()
    if options.resume:
        root, info, resolved = _resumed(recipe, options)
        if effective_status(info) == "killed" and progress is not None:
            pid = (info.get("process") or {}).get("pid")
            log.info(f"{root}: the run was stopped from outside (its process {pid} is gone); resuming it")
        data = info["cache"]
        splits_arg = info["split_arg"]
    else:
        resolved = resolve_config(
            recipe, tiny=options.tiny, config_file=options.config_file, overrides=options.overrides
        )
        if options.data is None:
            raise ConfigError("--data is required: a prepared dataset name or a cache file")
        data, splits_arg, root, info = options.data, options.split, None, None
    recipe.check_training(resolved.params)

    device = resolve_device(resolved.engine.device, _local_rank())
    _check_step_memory(recipe, resolved, device)
    dist = init_distributed(device)
    progress = progress if (progress is not None and dist.is_main) else NullProgress()
    started_on = info.get("world_size") if info is not None else None
    if isinstance(started_on, int) and started_on != dist.world and dist.is_main:
        log.warning(
            f"{root}: this run started on {started_on} rank(s) and goes on with {dist.world}: each batch is shared "
            "out otherwise and its ranks get other augmentation seeds, so its figures are no longer those a run "
            f"left on {started_on} rank(s) would give (the data order and the rest of the protocol are the same)"
        )
    raw, cache_path = open_dataset(data)
    try:
        dataset = recipe.wrap_dataset(raw, cache_path, resolved.params)
    except BaseException:
        close_dataset(raw)
        raise
    held = contextlib.ExitStack()
    given_folder = False
    try:
        if dist.active:  # every rank opened its data itself: one dataset (and one run) on every rank
            dist.check_same_data(
                "the installation",
                sys.executable,
                software_versions(),
                advice="every rank must run the same iqa and libraries (one environment or container image on "
                "every node)",
            )
            if info is not None and root is not None:
                identity = {"run_id": info.get("run_id"), "created": info.get("created")}
                dist.check_same_data("--resume", root, identity, advice=RUN_FOLDER_ADVICE)
            identity = cache_identity(raw) | {"splits": stored_split_digests(raw)} | recipe.data_identity(dataset)
            dist.check_same_data("--data", cache_path, identity)
        name = dataset_name(dataset, cache_path.stem)
        split_names = resolve_split_names(dataset, splits_arg, source=f"cache {cache_path}")
        if any(is_whole_split(s) for s in split_names) and not parse_watch(resolved.engine.watch):
            raise ConfigError(
                "--split whole trains on every image and tests none: name the datasets to score with --watch"
            )
        if root is None:
            # Rank 0 claims a default name (creates its folder); every rank checks the options alike.
            proposed = run_root(
                method=recipe.name, dataset=name, name=options.name, out=options.out, claim=dist.is_main
            )
            root = Path(dist.gather(str(proposed))[0])  # rank 0's name (time-stamped) for every rank
            if options.name is None and options.out is None:
                if dist.is_main:
                    held.callback(_remove_if_empty, root)  # a claimed name left unused (stopped before run.json)
            else:  # every rank looks before rank 0 writes anything (the gather below is a collective)
                check_new_run_folder(root, "--out" if options.out is not None else "--name")
                given_folder = root.is_dir()  # made by the user (empty): kept if the run is refused
        # One job per run folder: a second job (e.g. two --resume) fails at once. Rank 0 takes the lock
        # and every rank learns the outcome, so no rank is left waiting in a collective.
        refused: ConfigError | None = None
        if dist.is_main:
            try:
                held.enter_context(hold(root, "run folder"))
            except ConfigError as exc:
                refused = exc
        if not all(dist.gather(refused is None)):
            raise refused or ConfigError("the run folder is in use by another iqa job (see rank 0)", path=root)
        if info is None:
            # Every rank looks before rank 0 writes run.json below (the gather is a collective).
            if any(dist.gather((root / "run.json").exists())):
                raise ConfigError(
                    "a run already exists here (continue it with --resume, or pick another --name/--out)", path=root
                )
            # A run is known by this id (its checkpoints record it), not by its folder, which may be moved or
            # reached by another path; one id for every rank, like the folder's name.
            run_id = str(dist.gather(secrets.token_hex(8))[0])
            info = {
                "method": recipe.name,
                "title": recipe.title,
                "run_id": run_id,
                "dataset": name,
                "data": str(data),
                "cache": str(Path(cache_path).absolute()),  # `--resume` from another folder opens the same file
                "cache_identity": cache_identity(raw),  # a copy elsewhere is accepted by `--resume --data`
                "stored_splits": stored_split_digests(raw),  # which split set: `iqa runs combine` joins one
                "split_arg": splits_arg,
                "splits": {s: {"status": "pending"} for s in split_names},
                **run_selection(split_names, resolved.engine.select_on),
                "variant": getattr(resolved.params, "variant", None),
                "created": now(),
                "status": "running",
                "world_size": dist.world,
                **reproduction_record(device),
                "config": {
                    "tiny": resolved.tiny,
                    "engine": to_plain(resolved.engine),
                    "params": to_plain(resolved.params),
                },
            }
            if dist.is_main:
                root.mkdir(parents=True, exist_ok=True)
                write_config(root / "config.toml", config_sections(recipe.name, resolved))
                write_json(root / "config.json", info["config"] | {"method": recipe.name})
                write_run(root, info)
        try:
            report = _train_splits(
                TrainingRun(
                    recipe, resolved, dataset, cache_path, name, split_names, root, info, dist, device, progress
                ),
                resume=options.resume,
            )
            # Every rank is done before any tears the process group down: a rank that exits while
            # another still destroys its group can abort that one (gloo: "terminate called").
            dist.barrier()
            if report is not None and report.get("watched"):  # rank 0, after every rank has finished
                check_measured(report["watch"], report["watched"], str(root))
            return report
        except BaseException as exc:
            if not options.resume and isinstance(exc, (ConfigError, DataError)) and not _trained_anything(root):
                # A configuration the data refuses (e.g. --labeled larger than the training part): the
                # run never trained a step, so it leaves no run folder behind.
                if dist.is_main:
                    remove_unstarted_run(root, keep_folder=given_folder)
                raise
            if info.get("status") == "running":  # failed before a split started (e.g. unusable labels)
                info["status"] = "failed"
                _save_info(root, info, dist)
            raise
    finally:
        held.close()
        close_dataset(dataset)
        if dataset is not raw:
            close_dataset(raw)
        dist.shutdown()


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


def _trained_anything(root: Path) -> bool:
    """Whether any split of the run has written a training log or a checkpoint."""
    return any(root.glob("split-*/log.jsonl")) or any(root.glob("split-*/last.pt")) or any(root.glob("split-*/*/"))


def software_versions() -> dict[str, str | None]:
    """The versions that decide a run's numbers: iqa, Python and the libraries that compute them."""
    import platform

    import PIL
    import timm
    import torch

    from iqa_cli.version import __version__

    return {
        "iqa": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": torch.version.cuda,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
    }


def reproduction_record(device: Any) -> dict[str, Any]:
    """What reproducing a run needs beyond its configuration: versions, code, command, machine."""
    import platform
    import socket
    import subprocess
    import sys

    import torch

    on_gpu = getattr(device, "type", "") == "cuda" and torch.cuda.is_available()
    versions = {
        **software_versions(),
        # Asked on a GPU run only: it loads cuDNN (0.12 GiB of address space), which aborts the process
        # under a virtual memory limit (`ulimit -v`) on a CPU run that never uses it.
        "cudnn": torch.backends.cudnn.version() if on_gpu and torch.backends.cudnn.is_available() else None,
    }
    commit = None
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / ".git").exists():  # installed from a checkout (pip install -e .)
        try:
            done = subprocess.run(
                ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            )
            commit = done.stdout.strip() or None
            dirty = subprocess.run(
                ["git", "-C", str(checkout), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
            if commit and dirty:
                commit += " (with uncommitted changes)"
        except (OSError, subprocess.SubprocessError):
            commit = None
    devices = []
    if on_gpu:
        devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "versions": versions,
        "git_commit": commit,
        "command": " ".join(["iqa", *sys.argv[1:]]),
        "host": socket.gethostname(),
        "device": str(device),
        "devices": devices or [platform.processor() or platform.machine()],
    }


def _check_step_memory(recipe: Recipe[Any], resolved: ResolvedConfig, device: Any) -> None:
    """On the CPU, refuse a batch whose step would not fit in memory (the kernel would kill the run
    without a word), and say which batch size would. The memory is what this process may still take:
    a SLURM job's `--mem` bounds it, not the node's size."""
    if getattr(device, "type", str(device)) != "cpu":
        return
    need = recipe.step_memory_bytes(resolved.params, tiny=resolved.tiny)
    have = available_memory_bytes()
    if need is None or have is None or need <= 0.8 * have:
        return
    batch = int(resolved.params.batch_size)
    fits = max(1, int(batch * 0.8 * have / need))
    raise ConfigError(
        f"--batch-size {batch}: a {recipe.name} training step needs about {need / 2**30:.0f} GiB on the CPU and "
        f"{have / 2**30:.0f} GiB is available; try --batch-size {fits}, --tiny for a quick check, or a GPU"
    )


def _local_rank() -> int:
    from iqa_cli.train.distributed import env_world

    return env_world()[2]


@dataclass
class TrainingRun:
    """One `iqa train` run as `_train_splits` works through it."""

    recipe: Recipe[Any]
    resolved: ResolvedConfig
    dataset: DatasetLike
    cache_path: Path
    name: str  # the dataset's name
    split_names: list[str]
    root: Path  # the run folder
    info: dict[str, Any]  # run.json, updated as splits finish
    dist: DistContext
    device: Any
    progress: Progress


def _example(dataset: DatasetLike, indices: np.ndarray) -> str:
    """' (e.g. NAME)' of the first of `indices`, for a message; empty for a dataset without names."""
    names = getattr(dataset, "names", None)
    return f" (e.g. {names[int(indices[0])]})" if names is not None else ""


_TOLD_UNCHECKED: set[tuple[str, str]] = set()  # (cache, why) warned about, once per process


def _unchecked_references(dataset: DatasetLike) -> str | None:
    """Why some of the cache's references cannot be matched with files a start network saw, or None."""
    from iqa_cli.data.cache_read import reference_files_known

    ref_ids = getattr(dataset, "ref_ids", None)
    if ref_ids is None or not bool((np.asarray(ref_ids) >= 0).any()):
        return None
    counts = reference_files_known(ref_ids, getattr(dataset, "reference_digests", None))
    if counts is None:
        return "this cache was prepared before iqa recorded its reference files (prepare it again to have them checked)"
    known, used = counts
    if known == used:
        return None
    return (
        f"{used - known} of its {used} references have no file digest (their files were not found when it was "
        "prepared, or its --references values name no file below --root)"
    )


def _check_pretraining_unseen(
    dataset: DatasetLike, parts: SplitParts, pretrained: tuple[np.ndarray, str] | None, cache_path: str | Path
) -> None:
    """Refuse a split whose test part holds byte-identical copies of images the start network was
    pretrained on, or distortions of them (VIPNet's DPM made from a folder holding a dataset's photos or
    its references): its figures would read as unseen."""
    if pretrained is None:
        return
    unchecked = _unchecked_references(dataset)
    if unchecked is not None and (str(cache_path), unchecked) not in _TOLD_UNCHECKED:
        _TOLD_UNCHECKED.add((str(cache_path), unchecked))
        log.warning(
            f"{cache_path}: {unchecked}, so distortions of images {pretrained[1]} was pretrained on cannot be found "
            "among them"
        )
    copies = copies_of_seen(dataset, pretrained[0], parts.test)
    if copies.size:
        raise DataError(
            f"split '{parts.name}': {copies.size} of its {parts.test.size} test images are byte-identical copies of "
            f"images {pretrained[1]} was pretrained on, or distortions of them{_example(dataset, copies)}: its "
            "figures would be no "
            "unseen-data result; pretrain on other images, or train on a dataset without them",
            path=cache_path,
        )


def _copies_of_training(
    dataset: DatasetLike,
    parts: SplitParts,
    seen: np.ndarray | None,
    watched: list[WatchedDataset],
    root: Path,
    dist: DistContext,
) -> int:
    """How many of a split's test images are byte-identical copies of the files it trains on (an authors'
    or official split can put one file on both sides; random splits keep copies together): warned and
    reported beside its figures. A watched dataset holding such copies is refused: its figures would
    read as unseen-data results."""
    test_copies = copies_of_seen(dataset, seen, parts.test)
    if test_copies.size and dist.is_main:
        log.warning(
            f"split {parts.name}: {test_copies.size} of the {parts.test.size} test images are byte-identical copies "
            f"of training images{_example(dataset, test_copies)}; the split's figures include them "
            "(`test_copies_of_training` in "
            "results.json)"
        )
    for item in watched:
        if seen is not None and getattr(item.dataset, "file_digests", None) is None and dist.is_main:
            log.warning(
                f"--watch {item.name}: its cache was prepared before iqa recorded file digests, so copies of the "
                f"files split {parts.name} trains on cannot be found in it; prepare it again to have them checked"
            )
        held = copies_of_seen(item.dataset, seen, item.indices)
        if held.size:
            raise DataError(
                f"--watch {item.name}: {held.size} of its {item.indices.size} images are byte-identical copies of "
                f"images split {parts.name} trains on, or distortions of them{_example(item.dataset, held)}: its "
                "figures would be no "
                "unseen-data result; watch a dataset without them",
                path=root,
            )
    return int(test_copies.size)


def _split_meta(run: TrainingRun, meta: dict[str, Any], params: Any, split: str) -> dict[str, Any]:
    """The metadata a split's checkpoints carry: the run's, with the split, its digest and the network."""
    digest = split_digest(run.dataset, run.dataset.split(split))
    return {**meta, "split": split, "split_digest": digest, "model": run.recipe.model_name(params)}


def _check_resumable_states(run: TrainingRun, meta: dict[str, Any], params: Any) -> None:
    """Every split a resume goes on with must hold its own run's `last.pt`, checked before the run's record
    is written: a refused resume leaves a finished run finished (`--resume --epochs` had marked it failed)."""
    for split in run.split_names:
        last = split_dir(run.root, split) / LAST
        if run.info["splits"].get(split, {}).get("status") in (None, "pending", "complete") or not last.is_file():
            continue
        check_resumed_identity(resumable_meta(last), _split_meta(run, meta, params, split), last)


def _train_splits(run: TrainingRun, *, resume: bool) -> dict[str, Any] | None:
    recipe, resolved, dataset, cache_path, name = run.recipe, run.resolved, run.dataset, run.cache_path, run.name
    split_names, root, info, dist, device, progress = (
        run.split_names,
        run.root,
        run.info,
        run.dist,
        run.device,
        run.progress,
    )
    engine = resolved.engine
    # Per-dataset choices resolved for this dataset; checkpoints keep the given values (see dataset_params).
    params = recipe.dataset_params(resolved.params, dataset)
    labels, label_map = recipe.labels(dataset, params, str(cache_path))
    choices = choices_of(resolved.params, params, label_map)
    check_same_choices(info, root, choices, resolved.params, cache_path)
    info["data_choices"] = choices.to_record()
    identity = {**recipe.data_identity(dataset), **image_files_identity(dataset)}
    changed = changed_inputs(info.get("data_identity") or {}, identity)
    if changed:  # going on would train the rest of the run on other inputs than its start
        raise ConfigError(
            f"this run cannot continue on {cache_path}: it trained with other {inputs_text(changed)} than the cache "
            "has now (made again since); make them as it trained, or start a new run",
            path=root,
        )
    info["data_identity"] = identity
    upscaled = upscaled_views_note(dataset, view_sides(recipe.view_shapes(params)), recipe.name)
    if upscaled is not None and dist.is_main:
        log.warning(upscaled)
    left_out = left_out_note(dataset, name)
    if left_out is not None and dist.is_main:
        log.warning(left_out)
    meta = {
        "method": recipe.name,
        "variant": getattr(params, "variant", ""),
        "dataset": name,
        "images_digest": images_digest(dataset),
        "resize": str(dataset.attrs.get("resize", "")),  # how its images were stored: `iqa eval` compares
        "tiny": resolved.tiny,
        "labels": label_map.to_meta(),
        "params": to_plain(resolved.params),
        "run": str(root),
        **({"run_id": info["run_id"]} if info.get("run_id") else {}),  # runs begun before ids are known by folder
        **identity,
    }
    if params != resolved.params:
        meta["params_on_dataset"] = to_plain(params)
    pretrained = recipe.pretraining_seen(params)
    for split in split_names:  # a split that cannot be tested fails now, not after the splits before it trained
        if info["splits"].get(split, {}).get("status", "pending") == "pending":  # not started: can it start?
            split_meta = {**meta, "split": split, "split_digest": split_digest(dataset, dataset.split(split))}
            recipe.check_split_start(params, split_meta, split, tiny=resolved.tiny)
        if info["splits"].get(split, {}).get("status") != "complete":
            parts = make_parts(
                dataset, split, select_on=engine.select_on, val_fraction=engine.val_fraction, seed=engine.seed
            )
            _check_pretraining_unseen(dataset, parts, pretrained, cache_path)
            if 0 < parts.test.size < recipe.min_test_images:  # whole-dataset rounds test nothing, on purpose
                raise DataError(
                    f"split '{split}': its test part holds {parts.test.size} image(s), and a correlation needs at "
                    f"least {recipe.min_test_images} (two points correlate +-1 whatever the model); prepare more "
                    "images or a larger --test-fraction",
                    path=cache_path,
                )
            if parts.select_on == "val" and parts.val.size < recipe.min_test_images:
                raise DataError(
                    f"split '{split}': the validation part that selects the kept model holds {parts.val.size} of "
                    f"{parts.train.size + parts.val.size} training image(s), and a correlation needs at least "
                    f"{recipe.min_test_images}, so no epoch could be told better than another; raise --val-fraction "
                    f"(now {engine.val_fraction:g}), or --select-on test",
                    path=cache_path,
                )
    # A resumed run: splits still to train must come from the split set of those done (a new run's record
    # was just made from this cache).
    changed_splits = split_set_change(info, dataset) if resume else None
    if changed_splits is not None:
        raise ConfigError(
            f"{cache_path} no longer splits its images as when this run started: {changed_splits} (the cache was "
            "prepared again with another --split-seed or --test-fraction); resume with the cache the run started "
            "on, or start a new run",
            path=root,
        )
    if resume:
        _check_resumable_states(run, meta, params)
    results: dict[str, Any] = {}
    for source in parse_watch(engine.watch) if dist.active else ():  # before the ranks share their views
        watched_raw, watched_path = open_dataset(source)
        try:
            dist.check_same_data(f"--watch {source}", watched_path, cache_identity(watched_raw))
        finally:
            close_dataset(watched_raw)
    watched = open_watched(
        parse_watch(engine.watch),
        recipe,
        resolved.params,
        device,
        preload_gb=engine.preload_gb,
        progress=progress,
        training=(name, meta["images_digest"]),
        train_labels=label_map,
        tell=dist.is_main,
    )
    trained_here = False  # whether this command has trained a split to its end
    with StopRequest.for_this_process() as stop, contextlib.ExitStack() as closing:
        for item in watched:
            closing.callback(item.close)
        for split in split_names:
            state = info["splits"].setdefault(split, {"status": "pending"})
            out_dir = split_dir(root, split)
            if state.get("status") == "complete":
                results[split] = state["result"]
                continue
            # A stop asked for, or a time limit run out, between splits ends the run before the next split's
            # setup (its views alone can take minutes); every rank decides alike (clocks differ by rank). The
            # limit stops no split before this command has trained one: a job whose setup outlasts its limit
            # still makes progress each time it is requeued.
            asked = dist.gather((stop.signal_name, trained_here and over_time_limit(engine.time_limit)))
            reason = next((name for name, _ in asked if name), None) or (
                "time limit" if any(o for _, o in asked) else None
            )
            if reason is not None:
                info["status"] = "interrupted"
                _save_info(root, info, dist)
                raise TrainingInterrupted(
                    reason, 0, 0, None, stop_exit_code(reason), run=root, before_split=split, splits_done=len(results)
                )
            parts = make_parts(
                dataset, split, select_on=engine.select_on, val_fraction=engine.val_fraction, seed=engine.seed
            )
            split_meta = _split_meta(run, meta, params, split)
            state["digest"] = split_meta["split_digest"]  # as recorded: checked by `split_set_change`
            seen = seen_files(dataset, parts.train, parts.val)
            if seen is not None and pretrained is not None:  # what its start network saw counts as seen too
                seen = np.union1d(seen, pretrained[0])
            if seen is not None:  # so `iqa eval` can tell a copy of a training image in any other dataset
                split_meta[SEEN_FILES_KEY] = pack_seen_files(seen)
            test_copies = _copies_of_training(dataset, parts, seen, watched, root, dist)
            ctx = FitContext(
                recipe=recipe,
                params=params,
                cfg=_round_config(engine, split),
                dataset=dataset,
                labels=labels,
                device=device,
                meta=split_meta,
                tiny=resolved.tiny,
                dist=dist,
                progress=progress,
                stop=stop,
                watched=watched,
            )
            if dist.is_main:
                log.info(
                    f"{recipe.name} on {name}, split {split}: {parts.train.size} train / {parts.val.size} val / "
                    f"{parts.test.size} test images; model selected on {selection_label(parts.select_on)}; "
                    f"device {device}, {dist.world} rank(s)"
                )
            started_before = state.get("status") in ("running", "interrupted", "diverged", "failed")
            state.update(status="running", started=state.get("started") or now())
            _save_info(root, info, dist)
            try:
                result = fit_split(ctx, parts, out_dir, resume=resume and started_before)
                trained_here = True
            except TrainingInterrupted:
                state["status"] = "interrupted"
                info["status"] = "interrupted"
                _save_info(root, info, dist)
                raise
            except TrainingDiverged:
                state["status"] = "diverged"
                info["status"] = "diverged"
                _save_info(root, info, dist)
                raise
            except BaseException as exc:  # any other failure: say so, so the run is not left "running"
                state.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:500])
                info["status"] = "failed"
                _save_info(root, info, dist)
                raise
            summary = {
                "split": split,
                "dataset": name,
                "n": result.test["n"],
                **{k: result.test[k] for k in recipe.metric_names},
                **({"logistic_fit": result.test["logistic_fit"]} if "logistic_fit" in result.test else {}),
                "val": result.val,
                "best_epoch": result.best_epoch,
                "epochs": result.epochs,
                "steps": result.steps,
                "stopped_because": result.stopped_because,
                "selected_on": parts.select_on,
                "weights": str(result.weights),
            }
            if test_copies:
                summary["test_copies_of_training"] = test_copies
            if result.ranks:
                summary["ranks"] = result.ranks
            if result.watch:
                summary["watch"] = result.watch
            state.update(status="complete", finished=now(), result=summary)
            results[split] = summary
            _save_info(root, info, dist)
    rows = [results[s] for s in split_names]
    # Whole-dataset rounds test nothing (n = 0); every split that was tested must have measured something.
    problem = unmeasured_summary_problem([row for row in rows if row.get("n")], recipe.report_metrics[0])
    report: dict[str, Any] = {
        "method": recipe.name,
        "dataset": name,
        "run": str(root),
        **run_selection(split_names, engine.select_on),
        "splits": rows,
        **summary_metrics(rows, recipe.metric_names),
        "columns": list(recipe.report_metrics),
    }
    if watched:
        report["watch"] = median_over_rounds(rows)
        report["watched"] = [w.name for w in watched]
    if left_count := left_out_images(dataset):  # the figures come from part of the dataset (`--skip-bad`)
        report["left_out_images"] = left_count
    info["status"] = "complete"
    info["finished"] = now()
    info["median"] = report["median"]
    info.pop("problem", None)
    if problem:  # trained to the end, yet no result: `iqa runs list` says so rather than "complete"
        info["problem"] = problem
    _save_info(root, info, dist)
    if dist.is_main:
        write_json(root / RESULT_FILE, report)
    if problem:  # the run is complete and its files are written; its summary is no result
        raise DataError(f"{problem}; each split's figures are in {RESULT_FILE}", path=root / RESULT_FILE)
    return report if dist.is_main else None  # other DDP ranks: rank 0 reports


def _round_config(engine: EngineConfig, split: str) -> EngineConfig:
    """The engine settings of one split: whole-dataset rounds train the same images, so each round gets
    its own seed (seed x 1000 + round), as the authors' rounds reseed with seed x round."""
    if not is_whole_split(split):
        return engine
    return dataclasses.replace(engine, seed=engine.seed * 1000 + int(split.rsplit("_", 1)[1]))


def _save_info(root: Path, info: dict[str, Any], dist: DistContext) -> None:
    if dist.is_main:
        write_run(root, info)
