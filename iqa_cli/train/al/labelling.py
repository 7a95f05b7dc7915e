"""`iqa al select`: which images to label next, for people who label their own images between rounds.

The pool is every image of a prepared cache (`--data`; its scores, if any, are not read) or of a
folder (`--images`, searched recursively; `iqa prepare custom` needs a score per image, so unscored
images are read from the folder directly). Images already labelled (`--labelled`: .txt with one name
per line, .csv with a name column, or a .json with a `names` list, e.g. a run's `labelled.json`) are
left out. Round r of the budget's plan (`selection.round_plan`, sized on the whole pool as in
training) picks its images with the same rule as `iqa train aliqa`: uncertainty from the previous
round's kept model (`--weights`) or, without one, from zero-shot CLIP; representativeness from
`--distances` or the k-means stand-in computed over the whole pool (with the image features of the
model that scores uncertainty: zero-shot CLIP, or the --weights model, whose image tower is CLIP's
own after prompt-only rounds). The list is written atomically:
a .txt of names, or a .csv with each image's order (1 = picked first), index, name and the values
that chose it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqa_cli.atomic import atomic_path
from iqa_cli.data.datasets._files import fold
from iqa_cli.data.decode import IMAGE_SUFFIXES
from iqa_cli.errors import ConfigError, DataError
from iqa_cli.fsnames import name_text
from iqa_cli.progress import NullProgress, Progress
from iqa_cli.seeds import check_seed
from iqa_cli.train.al.params import CLIP_WEIGHTS
from iqa_cli.train.al.selection import (
    check_distance_order,
    head_disagreement,
    round_plan_for,
    select_for_round,
    template_disagreement,
    trimmed_distance,
    zero_shot_source,
)
from iqa_cli.train.al.signals import PoolScorer, kmeans_distances, read_distance_file, zero_shot_probabilities
from iqa_cli.train.config import apply_values, check_choices
from iqa_cli.train.data import close_dataset, open_dataset
from iqa_cli.train.distributed import resolve_device
from iqa_cli.train.recipes import get_recipe
from iqa_cli.usertext import read_user_text

OUTPUT_SUFFIXES = (".csv", ".txt")
NAME_HEADERS = ("name", "image", "image_name", "filename", "file", "file_name", "path", "img")
CSV_COLUMNS = ["order", "index", "name", "uncertainty", "distance_sum", "combined_score", "in_band"]


@dataclass
class NextBatchOptions:
    out: Path
    data: str | Path | None = None
    images: Path | None = None
    labelled: Path | None = None
    round: int = 1
    budget: float = 25.0
    weights: str | None = None
    pretrained: str | None = CLIP_WEIGHTS
    distances: str | Path | None = None
    distance_key: str | None = None  # None: the recipe's default; given without `distances`, an error
    distance_order: str | None = None
    tiny: bool = False
    device: str = "auto"
    batch_size: int = 64
    seed: int = 0
    preload_gb: float | None = None


@dataclass
class NextBatchReport:
    out: str
    round: int
    rounds: int
    pool: int
    labelled: int
    expected_labelled: int  # what the plan's earlier rounds select
    count: int
    band: int
    band_start: float
    weight: float
    uncertainty: str
    representativeness: str
    chosen: list[dict[str, Any]] = field(default_factory=list)


class FolderImages:
    """The images of a folder as a dataset without scores; each is decoded once and resized to side x side."""

    def __init__(self, root: Path, side: int, progress: Progress) -> None:
        from iqa_cli.train.augment import resize_to
        from iqa_cli.train.predict import expand_inputs, read_image

        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError("not a folder of images", path=root)
        files = expand_inputs([root])
        self.names = [name_text(f.relative_to(root).as_posix()) for f in files]  # as text, as a CSV spells it
        self.images = np.empty((len(files), side, side, 3), dtype=np.uint8)
        progress.start("reading images", len(files))
        for i, path in enumerate(files):
            image = torch.from_numpy(np.array(read_image(path))).permute(2, 0, 1)[None]
            self.images[i] = resize_to(image, side, side)[0].permute(1, 2, 0).numpy()
            progress.advance(1)
        progress.finish()
        self.sizes = np.full((len(files), 2), side, dtype=np.int64)
        self.scores = np.full(len(files), np.nan, dtype=np.float32)
        self.attrs: dict[str, Any] = {"dataset": root.name}

    def __len__(self) -> int:
        return len(self.names)

    def read_images(self, indices: np.ndarray) -> np.ndarray:
        return self.images[np.asarray(indices, dtype=np.int64)]

    def split_names(self) -> list[str]:
        return []

    def split(self, name: str) -> dict[str, np.ndarray]:
        raise DataError("a folder of images has no splits")


def read_names(path: Path) -> list[str]:
    """Image names from a .txt (one per line), .csv (a name column, else the first) or .json (`names`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError("list of labelled images not found (expected .txt, .csv or .json)", path=path)
    text = read_user_text(path)
    if path.suffix.lower() == ".json":
        try:
            names = json.loads(text)["names"]
        except (ValueError, KeyError, TypeError):
            raise DataError('expected a JSON object with a "names" list', path=path) from None
        if not isinstance(names, list):
            raise DataError('expected a JSON object with a "names" list', path=path)
        return [str(n) for n in names]
    if path.suffix.lower() != ".csv":  # one name per line, whole: a name may hold a comma or a quote
        lines = (line.strip() for line in text.splitlines())
        return [line for line in lines if line and not line.startswith("#")]
    rows = [row for row in csv.reader(text.splitlines()) if row and row[0].strip() and not row[0].startswith("#")]
    column = 0
    if rows:
        header = [cell.strip().lower() for cell in rows[0]]
        found = next((header.index(h) for h in NAME_HEADERS if h in header), None)
        if found is not None:
            column, rows = found, rows[1:]
    return [row[column].strip() for row in rows if len(row) > column]


def match_names(wanted: list[str], names: list[str], source: Path) -> np.ndarray:
    """Dataset indices of `wanted` (exact names, else folded: case and Unicode form ignored, `/` separators)."""
    exact = {n: i for i, n in enumerate(names)}
    loose: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        loose.setdefault(fold(n.replace("\\", "/")), []).append(i)
    found, unknown = set(), []
    for name in wanted:
        if name in exact:
            found.add(exact[name])
            continue
        matches = loose.get(fold(name.replace("\\", "/")), [])
        if len(matches) > 1:  # 'A.jpg' for a pool holding 'a.jpg' and 'A.JPG': which one was labelled?
            shown = ", ".join(repr(names[i]) for i in matches[:3])
            raise DataError(f"labelled name {name!r} matches {shown} of the pool but none exactly", path=source)
        if matches:
            found.add(matches[0])
        else:
            unknown.append(name)
    if unknown:
        raise DataError(
            f"{len(unknown)} labelled name(s) are not images of the pool, first: {unknown[0]!r}", path=source
        )
    return np.array(sorted(found), dtype=np.int64)


def _params(options: NextBatchOptions, recipe: Any) -> Any:
    values: dict[str, Any] = dict(recipe.tiny_params) if options.tiny else {}
    values.update(
        budget=options.budget,
        pretrained=options.pretrained if not options.tiny else None,
        eval_batch_size=options.batch_size,
    )
    if options.distance_order is not None:
        values["distance_order"] = options.distance_order
    if options.distance_key is not None:
        values["distance_key"] = options.distance_key
    params = apply_values(recipe.Params(), values, source="options")
    check_choices(params)
    recipe.check_params(params)
    if options.distances is not None:
        check_distance_order(params.distance_order)
    return params


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        if path.suffix.lower() == ".txt":
            f.writelines(f"{row['name']}\n" for row in rows)
            return
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            # 9 significant digits: the values that chose the images, without ties the selection did not see
            writer.writerow({k: (f"{v:.9g}" if isinstance(v, float) else v) for k, v in row.items()})


# A names list larger than this is not one this command wrote (KonIQ-10k's whole pool takes ~110 KB).
_NAMES_LIST_BYTES = 64 * 2**20


def _check_names_list(out: Path) -> None:
    """An existing .txt `--out` is replaced only when it is a list of image names, as this command writes:
    `--out notes.txt` must not destroy a user's notes (a .csv is checked by its header)."""
    if out.suffix.lower() != ".txt" or not out.is_file():
        return
    why = "it is larger than any list of names" if out.stat().st_size > _NAMES_LIST_BYTES else None
    if why is None:
        with open(out, encoding="utf-8", errors="replace") as handle:
            lines = (line.strip() for line in handle)
            stray = next((line for line in lines if line and not line.lower().endswith(IMAGE_SUFFIXES)), None)
        why = None if stray is None else f"it holds the line {stray[:40]!r}"
    if why is not None:
        raise ConfigError(
            f"--out {out} exists and is not a list of image names ({why}); it is not replaced "
            "(give another name, or remove it first)"
        )


log = logging.getLogger(__name__)

ZERO_SHOT = "zero-shot"  # `--weights zero-shot`: CLIP's zero-shot signal in any round, on purpose


def select_next(options: NextBatchOptions, progress: Progress | None = None) -> NextBatchReport:
    """Choose round `options.round`'s images; writes them to `options.out` and returns what was chosen."""
    progress = progress or NullProgress()
    check_seed(options.seed, "--seed")
    out = Path(options.out).expanduser()
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--out must end in .csv or .txt, got {out.name!r}")
    if options.labelled is not None and out.resolve() == Path(options.labelled).expanduser().resolve():
        raise ConfigError(
            f"--out {out} is the --labelled file: this round's picks would replace the names labelled so far"
        )
    _check_names_list(out)
    if (options.data is None) == (options.images is None):
        raise ConfigError("give the pool as either --data (a prepared cache) or --images (a folder)")
    if options.batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {options.batch_size}")
    idle = [
        f
        for f, v in (("--distance-key", options.distance_key), ("--distance-order", options.distance_order))
        if v is not None
    ]
    if idle and options.distances is None:
        raise ConfigError(
            f"{' and '.join(idle)} describe a --distances file, and none was given (the k-means stand-in reads "
            "no file): give --distances FILE, or leave them out"
        )
    recipe = get_recipe("aliqa")
    params = _params(options, recipe)
    device = resolve_device(options.device)
    zero_shot = options.weights is not None and options.weights.strip().lower() == ZERO_SHOT
    loaded = None
    if options.weights is not None and not zero_shot:
        from iqa_cli.train.weights import load_trained

        weights = previous_round_model(options.weights, options.round)
        options = dataclasses.replace(options, weights=weights)
        loaded = load_trained(recipe, weights)
        params = apply_values(
            params, {k: getattr(loaded.params, k) for k in ("global_source", "crop_size")}, source=weights
        )
    if options.data is not None:
        dataset, _ = open_dataset(options.data)
    else:
        assert options.images is not None  # one of the two, checked above
        dataset = FolderImages(Path(options.images), params.global_source, progress)
    try:
        return _select(options, recipe, params, dataset, loaded, device, out, progress)
    finally:
        close_dataset(dataset)


def previous_round_model(weights: str, round_: int) -> str:
    """`--weights` as given, or, for an AL-IQA run (its name or folder), that run's kept model of the round
    before `round_` (`split-K/round-<r-1>/best.safetensors` of its first split that finished that round):
    the model AL-IQA scores round r's candidates with. A run's final model is the fine-tuned one, after
    every round, so it is never taken for a round's."""
    from iqa_cli.train.al.rounds import round_dir
    from iqa_cli.train.runs import BEST, RESULT, find_weights_run, read_run, split_dir

    if Path(weights).expanduser().is_file():
        return weights
    try:
        root = find_weights_run(weights)
    except ConfigError:
        return weights  # a weights-store name (or a missing file: the loader says so)
    info = read_run(root)
    if info.get("method") != "aliqa":
        raise ConfigError(f"--weights: run {root} trained '{info.get('method')}', not aliqa")
    if round_ < 2:
        raise ConfigError(
            f"--weights {weights}: round 1 selects with zero-shot CLIP; a run's round-r model scores round r+1 "
            "(--round 2 or 3), or give a model file"
        )
    for split in info.get("splits") or {}:
        candidate = round_dir(split_dir(root, split), round_ - 1) / BEST
        if candidate.is_file() and (candidate.parent / RESULT).is_file():  # the round finished: its kept model
            log.info(f"note: --weights {weights}: the kept model of round {round_ - 1}, split {split}: {candidate}")
            return str(candidate)
    raise ConfigError(f"--weights: run {root} has no finished round {round_ - 1} (no round-{round_ - 1}/{BEST})")


def _select(
    options: NextBatchOptions,
    recipe: Any,
    params: Any,
    dataset: Any,
    loaded: Any,
    device: torch.device,
    out: Path,
    progress: Progress,
) -> NextBatchReport:
    names = [str(n) for n in getattr(dataset, "names", [str(i) for i in range(len(dataset))])]
    everything = np.arange(len(dataset), dtype=np.int64)
    labelled = np.empty(0, dtype=np.int64)
    if options.labelled is not None:
        labelled = match_names(read_names(Path(options.labelled)), names, Path(options.labelled))
    plans = round_plan_for(everything.size, params)
    if not 1 <= options.round <= len(plans):
        raise ConfigError(f"--round must be between 1 and {len(plans)}, got {options.round}")
    plan = plans[options.round - 1]
    if options.round > 1 and options.weights is None:
        # AL-IQA scores rounds 2 and 3 with the previous round's kept model; CLIP's zero-shot guess is
        # round 1's signal, and taking it later silently would pick other images than the method does.
        raise ConfigError(
            f"--round {options.round} selects with the previous round's kept model, as AL-IQA does: pass --weights "
            f"(e.g. a run's split-K/round-{options.round - 1}/best.safetensors), or --weights {ZERO_SHOT} to use "
            "zero-shot CLIP anyway"
        )
    expected = sum(p.count for p in plans[: plan.index - 1])
    if expected and not labelled.size:
        # Without the names, every image of the earlier rounds is a candidate again: the list would ask
        # for labels already given, and the rounds would not add up to the budget.
        raise ConfigError(
            f"--round {plan.index}: the earlier rounds label {expected} images, and no --labelled list names them: "
            "pass --labelled FILE (the names labelled so far, e.g. the earlier rounds' lists), or they would be "
            "chosen again"
        )
    if labelled.size != expected:
        log.warning(
            f"--labelled names {labelled.size} images, the plan's earlier rounds {expected}: round {plan.index} "
            f"selects its {plan.count} all the same, so the labelled share will not be the plan's"
        )
    remaining = everything[~np.isin(everything, labelled)]
    if remaining.size < plan.count:
        raise ConfigError(f"round {plan.index} selects {plan.count} images but only {remaining.size} are unlabelled")
    scorer = PoolScorer(recipe, params, dataset, device, progress=progress, preload_gb=options.preload_gb)
    if loaded is not None:
        model = loaded.model.to(device).eval()
        uncertainty = head_disagreement(scorer.heads(model, remaining))
        source = f"std of the 3 heads of {options.weights}"
    else:
        torch.manual_seed(options.seed)
        model = recipe.build_model(params, tiny=options.tiny, pretrained=True).to(device).eval()
        source = zero_shot_source(params) + (
            f" (round {options.round}: not AL-IQA's rule, which takes the previous round's model)"
            if options.round > 1
            else ""
        )
    features = None
    if loaded is None or options.distances is None:
        features = scorer.features(model, everything)
    if loaded is None:
        assert features is not None
        uncertainty = template_disagreement(zero_shot_probabilities(model, features[remaining]))
    if options.distances is not None:
        distance = read_distance_file(
            options.distances,
            key=params.distance_key,
            n_images=everything.size,
            order=params.distance_order,
            dataset=dataset,
        )
        representativeness = f"file {options.distances} ({params.distance_order} order)"
    else:
        assert features is not None
        distance = kmeans_distances(
            features, centroids=params.distill_images, repeats=params.distill_repeats, seed=options.seed
        )
        representativeness = "stand-in: k-means of the pool's CLIP image features"
    chosen = select_for_round(uncertainty, distance[:, :, remaining], plan, keep=params.distance_keep)
    sums = trimmed_distance(distance[:, :, remaining], params.distance_keep)
    in_band = set(int(p) for p in chosen.band)
    preferred = chosen.positions[::-1]  # smallest combined score (picked first) at the top
    rows = [
        {
            "order": order,
            "index": int(remaining[p]),
            "name": names[remaining[p]],
            "uncertainty": float(uncertainty[p]),
            "distance_sum": float(sums[p]),
            "combined_score": float(chosen.score[p]),
            "in_band": int(p) in in_band,
        }
        for order, p in enumerate(preferred, start=1)
    ]
    _write(out, rows)
    return NextBatchReport(
        out=str(out),
        round=plan.index,
        rounds=len(plans),
        pool=int(everything.size),
        labelled=int(labelled.size),
        expected_labelled=expected,
        count=plan.count,
        band=plan.band,
        band_start=plan.band_start,
        weight=plan.weight,
        uncertainty=source,
        representativeness=representativeness,
        chosen=rows,
    )
