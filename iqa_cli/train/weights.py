"""Building a trained model back from a checkpoint: ours (with metadata) or the authors' release.

Our checkpoints carry the method, variant, label mapping and every hyper-parameter in their metadata,
so the network is rebuilt exactly (tiny or full size, view sizes). A file without our metadata (an
authors' release) gets the method's protocol defaults.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iqa_cli.errors import CheckpointError, ConfigError
from iqa_cli.models.checkpoint import read_metadata
from iqa_cli.train.config import apply_values
from iqa_cli.train.data import is_whole_split
from iqa_cli.train.labels import LabelMap, recorded_labels
from iqa_cli.train.recipes.base import BaseParams, Recipe
from iqa_cli.train.runs import BEST, list_runs, read_run, split_dir, splits_cut_short
from iqa_cli.weights.store import StoredWeights

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: nn.Module
    params: BaseParams
    tiny: bool
    meta: dict[str, Any]
    source: str  # what the user named (path or store name)
    files: dict[str, Path]

    @property
    def train_labels(self) -> LabelMap | None:
        """The label mapping of the training dataset (to report predictions on its native scale)."""
        return recorded_labels(self.meta)

    @property
    def selected_on(self) -> str | None:
        return self.meta.get("selected_on")


def _json(meta: dict[str, str], key: str, default: Any) -> Any:
    raw = meta.get(key)
    if raw is None:
        return default
    try:
        return json.loads(raw)
    except (TypeError, ValueError):
        return raw


@dataclass
class TrainedSpec:
    """What a checkpoint says about the network it holds, read without building it."""

    files: dict[str, Path]
    meta: dict[str, str]
    params: BaseParams
    tiny: bool
    source: str


def read_trained(recipe: Recipe[Any], weights: str | Path, *, variant: str | None = None) -> TrainedSpec:
    """The parameters and metadata of the network named by `weights` (a file or a weights-store name),
    checked against `recipe`; nothing is built yet (`build_trained` does that)."""
    if variant is not None and not any(f.name == "variant" for f in fields(recipe.Params)):
        raise ConfigError(f"--variant: {recipe.name} has no variants (one network), so there is none to choose")
    files = recipe.weight_files(str(weights), variant)
    meta: dict[str, str] = {}
    if "model" in files:
        meta = read_metadata(files["model"])  # its tensors are read and checked by `build_trained`
    method = meta.get("method")
    # An imported authors' file records the network it was imported as (`iqa weights import MODEL`).
    imported = recipe.imported_params(method) if method and method == meta.get("model") else None
    if method and method != recipe.name and imported is None:
        raise CheckpointError(f"checkpoint is for method '{method}', not '{recipe.name}'", path=files["model"])
    recorded = _json(meta, "params", {})
    if not isinstance(recorded, dict):
        raise CheckpointError("its recorded parameters are not a JSON object: a damaged file", path=files["model"])
    saved_params = {**(imported or {}), **recorded}
    if saved_params:
        saved_params = recipe.saved_params(dict(saved_params))
    params = apply_values(recipe.Params(), saved_params, source=str(weights)) if saved_params else recipe.Params()
    saved_variant = getattr(params, "variant", None)
    if variant is not None and saved_params and saved_variant is not None and variant != saved_variant:
        raise CheckpointError(f"checkpoint holds the '{saved_variant}' variant, not '{variant}'", path=str(weights))
    if variant is not None and hasattr(params, "variant"):
        params = apply_values(params, {"variant": variant}, source="--variant")
    saved_model = meta.get("model")
    if saved_model and saved_model != recipe.model_name(params):
        raise CheckpointError(
            f"checkpoint is for model '{saved_model}', not '{recipe.model_name(params)}'", path=str(weights)
        )
    return TrainedSpec(files, meta, params, bool(_json(meta, "tiny", False)), str(weights))


def build_trained(recipe: Recipe[Any], spec: TrainedSpec) -> LoadedModel:
    """Build the network `spec` describes and load its weights (refusing non-finite ones)."""
    from iqa_cli.models.no_init import random_fills_skipped, unsaved_buffers

    model = None
    if recipe.build_without_init:
        with random_fills_skipped():  # the load below overwrites every saved tensor
            model = recipe.build_model(spec.params, tiny=spec.tiny, pretrained=False)
        if unsaved_buffers(model):  # kept from the build itself, maybe random: build it the usual way
            model = None
    if model is None:
        model = recipe.build_model(spec.params, tiny=spec.tiny, pretrained=False)
    recipe.load_weights(model, spec.files, spec.params)
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise CheckpointError(
            f"holds non-finite weights (NaN or infinity) in {', '.join(bad[:5])}: a damaged file",
            path=str(spec.files.get("model", spec.source)),
        )
    return LoadedModel(model, spec.params, spec.tiny, spec.meta, spec.source, spec.files)


def load_trained(recipe: Recipe[Any], weights: str | Path, *, variant: str | None = None) -> LoadedModel:
    """Rebuild and load the network named by `weights` (a file or a weights-store name)."""
    return build_trained(recipe, read_trained(recipe, weights, variant=variant))


@dataclass
class RunWeights:
    run: Path
    info: dict[str, Any]
    by_split: dict[str, Path]  # the kept model of every split that finished training
    unfinished: dict[str, str] = field(default_factory=dict)  # split -> its status (pending, interrupted, ...)
    label: str = ""  # how messages name it: the runs of `--weights a,b,c` joined as one; else the folder
    cut_short: list[str] = field(default_factory=list)  # finished splits that `--max-steps` stopped early

    @property
    def shown(self) -> str:
        return self.label or str(self.run)

    def unfinished_text(self) -> str:
        if not self.unfinished:  # no split recorded at all (the run failed before its first)
            return f"no split started (run {self.info.get('status') or 'unknown'})"
        return ", ".join(f"{split} {status}" for split, status in self.unfinished.items())


def run_weights(run: Path) -> RunWeights:
    """The kept models of a run's finished splits; a split still training (or stopped, or failed) has a
    best model so far, which is no result of the run, so it is listed in `unfinished` instead."""
    info = read_run(run)
    splits = info.get("splits", {})
    finished, unfinished = {}, {}
    for split, state in splits.items():
        status = str(state.get("status") or "pending") if isinstance(state, dict) else "pending"
        if status == "complete" and (split_dir(run, split) / BEST).is_file():
            finished[split] = split_dir(run, split) / BEST
            _check_kept_by(finished[split], info)
        else:
            unfinished[split] = f"complete, but its {BEST} is gone" if status == "complete" else status
    cut = [split for split in splits_cut_short(info) if split in finished]
    return RunWeights(run, info, finished, unfinished, cut_short=cut)


def _check_kept_by(best: Path, info: dict[str, Any]) -> None:
    """A run's kept model must be its own: a file copied in from another run (of the same dataset and split,
    so every other check passes) would be scored and reported under this run's name and configuration."""
    ours = info.get("run_id")
    kept_by = read_metadata(best).get("run_id") if ours else None
    if ours and kept_by and kept_by != ours:
        raise CheckpointError(
            f"is the kept model of another run (run id {kept_by}; this run's is {ours}): it is no result of this "
            "run; pass that file as --weights to score it as itself, or train this split again",
            path=best,
        )


def newest_run_weights(method: str, dataset: str | None, *, with_test_part: bool = False) -> RunWeights | None:
    """The newest run of `method` on `dataset` that finished every split. Newer unfinished runs are
    passed over with a note; when only unfinished runs exist, a one-line error says how to go on.
    `with_test_part` (a test on the dataset itself): runs of whole-dataset rounds, which hold nothing out,
    are passed over too, with a note, and an error says so when no other run is there."""
    passed_over: list[RunWeights] = []
    untestable: list[RunWeights] = []
    for path, _ in list_runs(method, dataset):
        weights = run_weights(path)
        if weights.by_split and not weights.unfinished:
            if with_test_part and all(is_whole_split(str(split)) for split in weights.by_split):
                untestable.append(weights)
                continue
            if passed_over:
                names = ", ".join(f"{w.run} ({w.unfinished_text()})" for w in passed_over)
                log.info(f"note: newer unfinished run(s) passed over: {names}")
            if untestable:
                names = ", ".join(str(w.run) for w in untestable)
                log.info(f"note: newer whole-dataset run(s) passed over (they hold nothing out to test): {names}")
            return weights
        passed_over.append(weights)
    if untestable and not passed_over:
        newest = untestable[0]
        raise CheckpointError(
            f"the newest finished {method} run{f' on {dataset}' if dataset else ''}, {newest.run}, trained on every "
            f"image ({', '.join(map(str, newest.by_split))}): nothing is held out to test it on; score it on other "
            "data with --cross DATA, or train a run with a test part"
        )
    if passed_over:
        newest = passed_over[0]
        raise CheckpointError(
            f"no finished {method} run{f' on {dataset}' if dataset else ''}: the newest, {newest.run}, has "
            f"{newest.unfinished_text()}; finish it (`iqa train {method} --resume --out {newest.run}`)"
            + (" or pass --weights RUN --split K for a finished split" if newest.by_split else "")
        )
    return None


def newest_finished_run(method: str) -> Path:
    """The newest complete run of `method` with a kept model, or a one-line error saying how to get one."""
    for path, info in list_runs(method, None):
        if info.get("status") == "complete" and run_weights(path).by_split:
            return path
    raise CheckpointError(f"no finished {method} run to score with; pass --weights (a file, a store name or a run)")


def apply_test_overrides(recipe: Recipe[Any], params: Any, overrides: dict[str, Any], *, files: bool = False) -> Any:
    """The loaded model's parameters with the test-time choices the user made (`Recipe.test_options`:
    `eval_params`, or `predict_params` where image `files` are scored), checked by the method's rules
    before any image is read (e.g. a branch the checkpoint does not hold)."""
    unknown = sorted(set(overrides) - set(recipe.test_options(files=files)))
    if unknown:
        raise ConfigError(f"{recipe.name}: {', '.join(unknown)} cannot be changed at test time")
    changed = apply_values(params, overrides, source="options") if overrides else params
    recipe.check_params(changed)
    recipe.refuse_idle(changed, overrides)  # e.g. IEIT's --classifier for a model that selects no enhanced image
    return changed


def add_checkpoint(name: str, file: str | Path, *, method: str | None = None, overwrite: bool = False) -> StoredWeights:
    """`iqa weights add`: store `file` under `name`. A model iqa trained is checked against the network its
    own options describe (a `--tiny` model, or options that change the network, fit no default network),
    loaded as `iqa eval` would load it; any other file against the default network of `method`."""
    from iqa_cli.train.recipes import get_recipe
    from iqa_cli.weights.importer import add_file

    meta = read_metadata(Path(file))
    trained_by = meta.get("method")
    if not meta.get("params") or not trained_by or (method is not None and method != meta.get("model")):
        return add_file(name, file, method=method, overwrite=overwrite)
    loaded = load_trained(get_recipe(str(trained_by)), Path(file))
    reference = {key: value.to("meta") for key, value in loaded.model.state_dict().items()}
    return add_file(name, file, method=method, overwrite=overwrite, reference=reference)
