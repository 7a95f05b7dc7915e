"""AL-IQA's multi-round training of one split: select, train, select again, ..., fine-tune.

`fit_rounds` is the recipe's `fit`. For round r of the budget's plan (`selection.round_plan`):
1. unless `round-<r>/selected.json` exists (a resumed run), score the images of the pool not yet
   labelled (round 1: zero-shot prompt wordings; later: the three heads of round r-1's kept model),
   combine with the representativeness of each image (`distances.npz`: the user's distance file or
   the k-means stand-in, computed once over the whole pool) and write the chosen dataset indices and
   names to `round-<r>/selected.json`;
2. train fresh prompts on everything labelled so far with the engine (`round-<r>/`), the kept model
   chosen on the split's validation part (or test with --select-on test).
Then `fine-tune/` starts from the last round's kept model with the encoders' last blocks unfrozen,
and its kept model is copied to `best.safetensors` of the split folder. A round whose `result.json`
and kept model exist is skipped on --resume; an interrupted one resumes from its `last.pt`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch

from iqa_cli.atomic import atomic_path
from iqa_cli.errors import CheckpointError, ConfigError
from iqa_cli.train.al.heads import head_metrics
from iqa_cli.train.al.params import ALIQAParams
from iqa_cli.train.al.selection import RoundPlan, round_plan_for, select_for_round, trimmed_distance
from iqa_cli.train.al.signals import PoolScorer, kmeans_distances, read_distance_file, zero_shot_probabilities
from iqa_cli.train.config import to_plain, write_json
from iqa_cli.train.data import (
    SEEN_FILES_KEY,
    TRAINED_BEYOND_SPLIT_KEY,
    SplitParts,
    pack_seen_files,
    seen_files,
)
from iqa_cli.train.engine import FitContext, FitResult, Trainer
from iqa_cli.train.precision import amp_dtype
from iqa_cli.train.recipes.base import Recipe
from iqa_cli.train.runs import BEST, LAST, PREDICTIONS, RESULT, cut_by_step_limit

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from iqa_cli.models.aliqa import ALIQA

SELECTED = "selected.json"
DISTANCES = "distances.npz"
LABELLED = "labelled.json"
FINE_TUNE = "fine-tune"
# (stage, prompt context length, start weights) -> the recipe of one training step (the AL-IQA recipe's
# `for_step`; passed in, so the rounds do not import the recipe that runs them)
StepRecipe = Callable[[str, int, "Path | None"], Recipe[ALIQAParams]]


def round_dir(out_dir: Path, index: int) -> Path:
    return out_dir / f"round-{index}"


def heads_evaluation(trainer: Trainer, indices: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """The engine's evaluation hook for AL-IQA's steps: all three heads are scored, the kept model
    maximises the authors' mean PLCC + mean SRCC over the heads, and the reported score stays head
    2's. With `evaluate_before_training` (as the authors' step scripts compare with the evaluation
    they run first), a fine-tune step must beat round 3's model, or round 3's model is kept."""
    from iqa_cli.train.al.signals import Outputs, all_heads

    heads = trainer.predict(indices, Outputs(trainer.recipe, all_heads))
    score_head = cast("ALIQA", trainer.model).score_head
    return head_metrics(heads, trainer.labels.numpy()[indices], score_head), 1.0 + 4.0 * heads[:, score_head]


# ------------------------------------------------------------------------------------------ helpers


def _names(ctx: FitContext[ALIQAParams], indices: np.ndarray) -> list[str]:
    names = getattr(ctx.dataset, "names", None)
    return [str(names[i]) if names is not None else "" for i in indices]


def _result_from_file(path: Path) -> FitResult:
    data = json.loads(path.read_text(encoding="utf-8"))
    wanted = {f.name for f in dataclasses.fields(FitResult)}
    values = {k: v for k, v in data.items() if k in wanted}
    values["weights"] = Path(values["weights"]) if values.get("weights") else None
    return FitResult(**values)


def _finished(step_dir: Path) -> bool:
    return (step_dir / RESULT).is_file() and (step_dir / BEST).is_file()


def _log(ctx: FitContext[ALIQAParams], message: str) -> None:
    if ctx.dist.is_main:
        log.info(message)


def _write(ctx: FitContext[ALIQAParams], path: Path, obj: Any) -> None:
    if ctx.dist.is_main:
        write_json(path, obj)
    ctx.dist.barrier()


# ------------------------------------------------------------------------------------ the signals


def pool_distances(
    ctx: FitContext[ALIQAParams], pool: np.ndarray, out_dir: Path, features: Any, *, resume: bool
) -> np.ndarray:
    """(repeats, K, len(pool)) distances of the pool images, from the user's file or the k-means stand-in."""
    params = ctx.params
    path = out_dir / DISTANCES
    if resume and path.is_file():
        with np.load(path, allow_pickle=False) as saved:
            if np.array_equal(saved["indices"], pool):
                return np.asarray(saved["distance"], dtype=np.float64)
    if params.distances:
        distance = read_distance_file(
            params.distances,
            key=params.distance_key,
            n_images=len(ctx.dataset),
            order=params.distance_order,
            dataset=ctx.dataset,
        )[:, :, pool]
        source = f"file {params.distances} ({params.distance_order} order)"
    else:
        distance = kmeans_distances(
            features(), centroids=params.distill_images, repeats=params.distill_repeats, seed=ctx.cfg.seed
        )
        source = (
            f"stand-in: {params.distill_repeats} seeded k-means repeats, {distance.shape[1]} centroids of the "
            "pool's L2-normalised CLIP image features, Euclidean distances"
        )
    if ctx.dist.is_main:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, distance=distance, indices=pool, source=np.array(source))
    ctx.dist.barrier()
    return distance


def pool_uncertainty(
    ctx: FitContext[ALIQAParams], remaining: np.ndarray, scorer: PoolScorer, previous: Path | None, zero_shot: Any
) -> tuple[np.ndarray, str]:
    """Disagreement of the prompt wordings (round 1) or of the previous round's three heads.

    `zero_shot()` gives (CLIP with its pretrained weights, its image features of the whole pool)."""
    from iqa_cli.train.al.selection import head_disagreement, template_disagreement, zero_shot_source

    if previous is None:
        model, features, pool = zero_shot()
        probabilities = zero_shot_probabilities(model, features[np.searchsorted(pool, remaining)])
        return template_disagreement(probabilities), zero_shot_source(ctx.params)
    from iqa_cli.train.weights import load_trained

    loaded = load_trained(ctx.recipe, previous)
    heads = scorer.heads(loaded.model, remaining)
    return head_disagreement(heads), f"std of the 3 heads of {previous.parent.name}/{previous.name}"


# ------------------------------------------------------------------------------------------ steps


def _selection(
    ctx: FitContext[ALIQAParams],
    plan: RoundPlan,
    pool: np.ndarray,
    labelled: np.ndarray,
    distance: np.ndarray,
    uncertainty: tuple[np.ndarray, str],
    path: Path,
) -> np.ndarray:
    remaining = pool[~np.isin(pool, labelled)]
    scores, source = uncertainty
    columns = distance[:, :, np.searchsorted(pool, remaining)]
    chosen = select_for_round(scores, columns, plan, keep=ctx.params.distance_keep)
    representativeness = trimmed_distance(columns, ctx.params.distance_keep)
    indices = remaining[chosen.positions]
    record = {
        "round": plan.index,
        "budget_percent": ctx.params.budget,
        "fraction_of_pool": plan.fraction,
        "pool_size": int(pool.size),
        "remaining_before": int(remaining.size),
        "count": plan.count,
        "band": plan.band,
        "band_start": plan.band_start,
        "borda_weight": plan.weight,
        "uncertainty": source,
        "in_band": int(np.isin(chosen.positions, chosen.band).sum()),
        "indices": [int(i) for i in indices],
        "names": _names(ctx, indices),
        "uncertainty_values": [float(v) for v in scores[chosen.positions]],
        "distance_sums": [float(v) for v in representativeness[chosen.positions]],
        "combined_scores": [float(v) for v in chosen.score[chosen.positions]],
    }
    _write(ctx, path, record)
    return indices


def _saved_selection(path: Path, plan: RoundPlan, pool: np.ndarray, labelled: np.ndarray) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        indices = np.asarray(json.loads(path.read_text(encoding="utf-8"))["indices"], dtype=np.int64)
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"damaged selection file ({exc})", path=path) from None
    if indices.size != plan.count or not np.isin(indices, pool).all() or np.isin(indices, labelled).any():
        raise CheckpointError(
            f"the saved selection does not fit this run (expected {plan.count} images of the pool not labelled "
            "before; start a new run)",
            path=path,
        )
    return indices


def _train_step(
    ctx: FitContext[ALIQAParams],
    parts: SplitParts,
    labelled: np.ndarray,
    step_dir: Path,
    *,
    stage: str,
    n_ctx: int,
    init_from: Path | None,
    resume: bool,
    label: str,
    step_recipe: StepRecipe,
) -> FitResult:
    if resume and _finished(step_dir):
        _log(ctx, f"split {parts.name} {label}: finished before, kept model {step_dir / BEST}")
        return _result_from_file(step_dir / RESULT)
    params, cfg = ctx.params, ctx.cfg
    if stage == "fine-tune":
        params = dataclasses.replace(params, batch_size=params.ft_batch_size)
    # `--time-limit` counts from the command's start (`time_limit_clock`), so each round stops in time as it is;
    # a round begun after the limit still saves a resumable state at its first step.
    changes: dict[str, Any] = {"eval_every": params.eval_period}
    step_ctx = dataclasses.replace(
        ctx,
        recipe=step_recipe(stage, n_ctx, init_from),
        params=params,
        cfg=dataclasses.replace(cfg, **changes),
        meta={**ctx.meta, "al_step": label, "al_stage": stage, "al_labelled": int(labelled.size)},
    )
    step_parts = dataclasses.replace(parts, train=np.sort(labelled))
    if params.pool == "all":  # the authors' protocol: the test set is every image not selected
        everything = np.arange(len(ctx.dataset), dtype=np.int64)
        step_parts = dataclasses.replace(step_parts, test=np.setdiff1d(everything, labelled))
        # Its checkpoints must not claim the split's training part: it trained on images of any part, so
        # `iqa eval` refuses every test part of this dataset, and copies elsewhere are found by its own.
        meta = {**step_ctx.meta, TRAINED_BEYOND_SPLIT_KEY: "AL-IQA --pool all: its pool was the whole dataset"}
        seen = seen_files(ctx.dataset, labelled)
        if seen is not None:
            meta[SEEN_FILES_KEY] = pack_seen_files(seen)
        step_ctx = dataclasses.replace(step_ctx, meta=meta)
    _log(ctx, f"split {parts.name} {label}: training {stage} (n_ctx {n_ctx}) on {labelled.size} labelled images")
    trainer = Trainer(step_ctx, step_parts, step_dir, evaluation=heads_evaluation, evaluate_before_training=True)
    return trainer.fit(resume=resume and (step_dir / LAST).is_file())


def _round_summary(label: str, labelled: int, result: FitResult) -> dict[str, Any]:
    test = {k: v for k, v in result.test.items() if isinstance(v, (int, float))}
    summary = {
        "step": label,
        "labelled": labelled,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs,
        "test": test,
    }
    if cut_by_step_limit(result.stopped_because):
        summary["stopped_because"] = result.stopped_because
    return summary


def _copy(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def fit_rounds(
    ctx: FitContext[ALIQAParams], parts: SplitParts, out_dir: Path, *, resume: bool, step_recipe: StepRecipe
) -> FitResult:
    params = ctx.params
    if ctx.cfg.eval_every not in (1, params.eval_period):
        raise ConfigError(
            f"aliqa evaluates every --eval-period epochs (protocol 5, here {params.eval_period}); "
            "set that instead of --eval-every"
        )
    if ctx.dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    pool = np.sort(np.asarray(parts.train, dtype=np.int64))
    if params.pool == "all":
        if parts.select_on != "test":
            raise ConfigError(
                "--pool all is the authors' protocol, where the images not selected are the test set and pick the "
                "kept model: add --select-on test (or keep --pool train for a clean test part)"
            )
        pool = np.arange(len(ctx.dataset), dtype=np.int64)
        _log(
            ctx,
            f"split {parts.name}: POOL = THE WHOLE DATASET (the authors' protocol): the test set is every image not "
            "selected and also picks the kept model; results are optimistic and not comparable with a held-out split",
        )
    plans = round_plan_for(pool.size, params)
    scorer = PoolScorer(
        ctx.recipe,
        params,
        ctx.dataset,
        ctx.device,
        amp_dtype(ctx.cfg.eval_amp, ctx.device, evaluation=True),
        ctx.dist,
        ctx.progress,
        ctx.cfg.preload_gb,
    )
    cached: dict[str, Any] = {}

    def zero_shot() -> tuple[Any, np.ndarray, np.ndarray]:  # built once, and only when a round needs it
        if "model" not in cached:
            torch.manual_seed(ctx.cfg.seed)
            model = ctx.recipe.build_model(params, tiny=ctx.tiny, pretrained=True).to(ctx.device).eval()
            cached["model"], cached["features"] = model, scorer.features(model, pool)
        return cached["model"], cached["features"], pool

    total = sum(p.count for p in plans)
    _log(
        ctx,
        f"split {parts.name}: AL-IQA budget {params.budget:g} % of a pool of {pool.size} images = {total} labels in "
        f"{len(plans)} rounds ({', '.join(str(p.count) for p in plans)})",
    )
    distance: np.ndarray | None = None
    labelled = np.empty(0, dtype=np.int64)
    previous: Path | None = None
    summaries, result = [], None
    for plan, n_ctx in zip(plans, params.round_n_ctx, strict=True):
        step_dir = round_dir(out_dir, plan.index)
        label = f"round {plan.index}/{len(plans)}"
        if ctx.dist.is_main:
            step_dir.mkdir(parents=True, exist_ok=True)
        chosen = _saved_selection(step_dir / SELECTED, plan, pool, labelled) if resume else None
        if chosen is None:
            if distance is None:
                distance = pool_distances(ctx, pool, out_dir, lambda: zero_shot()[1], resume=resume)
            remaining = pool[~np.isin(pool, labelled)]
            uncertainty = pool_uncertainty(ctx, remaining, scorer, previous, zero_shot)
            chosen = _selection(ctx, plan, pool, labelled, distance, uncertainty, step_dir / SELECTED)
            _log(ctx, f"split {parts.name} {label}: selected {chosen.size} of {remaining.size} images")
        cached.clear()
        scorer.release()  # the engine holds its own views while it trains
        labelled = np.concatenate([labelled, chosen])
        result = _train_step(
            ctx,
            parts,
            labelled,
            step_dir,
            step_recipe=step_recipe,
            stage="prompts",
            n_ctx=n_ctx,
            init_from=None,
            resume=resume,
            label=label,
        )
        summaries.append(_round_summary(label, int(labelled.size), result))
        previous = step_dir / BEST
    final_dir = round_dir(out_dir, len(plans))
    if params.fine_tune:
        final_dir = out_dir / FINE_TUNE
        result = _train_step(
            ctx,
            parts,
            labelled,
            final_dir,
            step_recipe=step_recipe,
            stage="fine-tune",
            n_ctx=params.round_n_ctx[-1],
            init_from=previous,
            resume=resume,
            label="fine-tune",
        )
        summaries.append(_round_summary("fine-tune", int(labelled.size), result))
    assert result is not None
    cut = [row["stopped_because"] for row in summaries if row.get("stopped_because")]
    # a round cut by --max-steps chose the next round's images with a shortened model: the run was cut too
    final = dataclasses.replace(
        result, weights=out_dir / BEST, stopped_because=cut[0] if cut else result.stopped_because
    )
    if ctx.dist.is_main:
        _copy(final_dir / BEST, out_dir / BEST)
        if (final_dir / PREDICTIONS).is_file():
            _copy(final_dir / PREDICTIONS, out_dir / PREDICTIONS)
        write_json(out_dir / LABELLED, {"indices": [int(i) for i in labelled], "names": _names(ctx, labelled)})
        protocol = (
            "the authors' pool: the whole dataset; test = the images not selected, which also pick the kept model "
            "(optimistic)"
            if params.pool == "all"
            else "clean pool: the split's training part; its test part is never seen"
        )
        record = {**to_plain(final), "selected_on": parts.select_on, "al_steps": summaries, "al_pool": protocol}
        write_json(out_dir / RESULT, record)
    ctx.dist.barrier()
    final_test = {k: v for k, v in final.test.items() if isinstance(v, float) and math.isfinite(v)}
    _log(ctx, f"split {parts.name}: AL-IQA done, {labelled.size} labelled; test " + _short(final_test))
    return final


def _short(metrics: dict[str, float]) -> str:
    return " ".join(f"{k} {metrics[k]:.4f}" for k in ("srcc", "plcc") if k in metrics)
