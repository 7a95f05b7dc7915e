"""Score image files with trained weights: any size, JPEG/PNG/BMP/TIFF (anything Pillow reads).

Images are decoded as `iqa prepare` decodes them (`iqa_cli.data.decode`: EXIF orientation applied;
grey, palette, alpha and 16-bit images become 8-bit RGB), turned into the method's views on the device and
scored in batches. An unreadable file stops the run with one line naming it, or is listed as skipped
with `skip_bad=True`; it never takes the rest of the batch down.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from iqa_cli.data.decode import IMAGE_SUFFIXES, ImageHeader, content_notes
from iqa_cli.data.resize import ResizePolicy, parse_policy
from iqa_cli.errors import CheckpointError, ConfigError, DataError
from iqa_cli.fsnames import hidden_name, name_text
from iqa_cli.progress import NullProgress, Progress
from iqa_cli.stop import raise_if_stopped
from iqa_cli.threads import inference_threads
from iqa_cli.train.config import AMP_MODES
from iqa_cli.train.distributed import resolve_device
from iqa_cli.train.labels import LabelMap
from iqa_cli.train.precision import Precision, amp_dtype, autocast, half_precision_ties
from iqa_cli.train.prefetch import Prefetch
from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.weights import LoadedModel, apply_test_overrides, build_trained, read_trained

log = logging.getLogger(__name__)

MIN_SIDE = 2  # pixels: an image of one row or column has no structure to judge
PER_WORKER = 4  # images per decode process at least: fewer images decode in this process (no start-up)
# Batches of views made ahead of the forward: enough to use the network's build (and, in a fresh
# process, timm's import: about 1.5 s) for a small folder's views, within this many bytes.
QUEUED_VIEW_BYTES = 128 * 2**20
MAX_AHEAD = 8


@dataclass
class Prediction:
    path: str
    score: float  # on the model's training scale (1-5 for VT-IQA)
    score_native: float | None  # on the training dataset's native scale, when the checkpoint says how
    width: int
    height: int
    # What the number stands for, where it is no quality score (a distortion classifier's type and level).
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class PredictReport:
    method: str
    weights: str
    scale: str
    native_scale: str | None
    predictions: list[Prediction] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what decoding left out of some images (`content_notes`)
    # The training cache's resize policy the files were sized by before their views (`stored_policy`), or None.
    resize: str | None = None


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files as given, and image files found (recursively, sorted) in folders."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            # Hidden files and everything in hidden folders are left out, as `ls` does: a drive's
            # `.Trash-1000/` holds deleted photos, a viewer's `.thumbnails/` small copies, `__MACOSX/` shadows.
            entries = [p for p in path.rglob("*") if not any(map(hidden_name, p.relative_to(path).parts))]
            every = [p for p in entries if p.is_file()]
            found = sorted(p for p in every if p.suffix.lower() in IMAGE_SUFFIXES)
            # named as images but no files: a pipe would block the decoder, a broken link has nothing to read
            odd = sorted(
                p for p in entries if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_file() and not p.is_dir()
            )
            if odd:
                log.warning(
                    f"{path}: {len(odd)} entr{'y' if len(odd) == 1 else 'ies'} named as images left out, not regular "
                    f"files (a pipe, device or broken link): {', '.join(str(o.relative_to(path)) for o in odd[:3])}"
                    + (", ..." if len(odd) > 3 else "")
                )
            if not found:
                raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder", path=path)
            left = Counter(p.suffix.lower() or "(none)" for p in every if p.suffix.lower() not in IMAGE_SUFFIXES)
            if left:  # said, so a folder of .gif or .jfif photos is not scored short without a word
                kinds = ", ".join(f"{suffix}: {count}" for suffix, count in sorted(left.items()))
                log.info(f"note: {path}: {sum(left.values())} file(s) left out, not named as images ({kinds})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():  # a named pipe would block the decoder for ever
            raise DataError("not a regular file (a pipe, socket or device): expected an image file", path=path)
        else:
            raise DataError("no such file or folder", path=path)
    return _once_each(files)


def _once_each(files: list[Path]) -> list[Path]:
    """A file named twice (`a.jpg a.jpg`, or a file and its folder) is scored once: a table with repeated
    rows would weigh that image double in any mean or correlation taken from it."""
    kept: dict[str, Path] = {}
    repeated: dict[str, Path] = {}
    for path in files:
        key = os.path.normpath(path.absolute())  # the same name however written; links stay separate names
        if key in kept:
            repeated.setdefault(key, kept[key])
        else:
            kept[key] = path
    if repeated:
        names = [str(p) for p in repeated.values()]
        log.warning(
            f"{len(names)} image(s) named more than once are scored once: {', '.join(names[:3])}"
            + (", ..." if len(names) > 3 else "")
        )
    return list(kept.values())


def stored_policy(meta: dict[str, Any]) -> ResizePolicy | None:
    """The resize policy of the cache a model trained on (`resize` in its metadata: 'short:768', '512x384'),
    which image files are stored by before their views, as that cache stored the model's images; None
    where it kept them at their own size, or does not say (an authors' release, an older checkpoint)."""
    recorded = str(meta.get("resize") or "")
    try:
        policy = parse_policy(recorded) if recorded else None
    except ConfigError:
        return None  # a policy this iqa cannot read sizes nothing
    return None if policy is None or policy.kind == "none" else policy


def apply_policy(array: np.ndarray, policy: ResizePolicy | None) -> np.ndarray:
    """An H x W x 3 uint8 image sized by a cache's resize `policy` as an image file is (`ResizePolicy.file_size`;
    Pillow bicubic, as `iqa prepare` resizes a decoded image); unchanged without one."""
    if policy is None:
        return array
    from PIL import Image

    size = policy.file_size(int(array.shape[1]), int(array.shape[0]))
    if size == (array.shape[1], array.shape[0]):
        return array
    return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BICUBIC), dtype=np.uint8)


def scoring_ties(scores: list[float] | np.ndarray, dtype: Precision) -> str | None:
    """Half-precision scores that tied: images that cannot be ranked apart; None in float32, or when every
    score differs."""
    outcome = "tied ones cannot be ranked apart"
    return half_precision_ties(scores, dtype, made="scoring", noun="scores", outcome=outcome)


def read_image(path: Path, reduce_to: int = 0, policy: ResizePolicy | None = None) -> np.ndarray:
    """uint8 (h, w, 3) RGB decoded as `iqa prepare` decodes (iqa_cli.data.decode), or DataError;
    `policy` stores it as a cache of that resize policy does, else `reduce_to` > 0 lets a large JPEG
    decode reduced while both sides stay well above it."""
    from iqa_cli.data.decode import DecodeFailure, DecodeJob, decode_job

    bound = (reduce_to, reduce_to) if reduce_to else None
    result = decode_job(DecodeJob(str(path), reduce_to=bound, policy=policy))
    if isinstance(result, DecodeFailure):
        raise DataError(result.message, path=path)
    if policy is not None:  # the policy may have enlarged a 1x1 image: its own size says
        from iqa_cli.data.decode import read_header

        header = read_header(path)
        if isinstance(header, ImageHeader) and min(header.width, header.height) < MIN_SIDE:
            raise DataError(f"image is only {header.width}x{header.height} pixels", path=path)
    return result


def _decoded(
    files: list[Path],
    skip_bad: bool,
    skipped: list[tuple[str, str]],
    *,
    reduce_to: int = 0,
    policy: ResizePolicy | None = None,
    workers: int = 1,
    headers: list[tuple[str, ImageHeader]] | None = None,
) -> Iterator[tuple[Path, np.ndarray, tuple[int, int]]]:
    """Decoded images in input order (`read_image`'s `reduce_to` and `policy`): in `workers` processes (a
    few batches in flight), else in this one; each one's header is appended to `headers`."""
    from iqa_cli.data.decode import DecodeFailure, DecodeJob, decode_images, read_header, worker_pool

    bound = (reduce_to, reduce_to) if reduce_to else None
    jobs = [DecodeJob(str(path), reduce_to=bound, policy=policy) for path in files]
    with worker_pool(min(workers, max(1, len(files) // PER_WORKER))) as pool:
        for path, image in zip(files, decode_images(jobs, workers=pool), strict=True):
            if isinstance(image, DecodeFailure):
                if not skip_bad:
                    raise DataError(image.message, path=path)
                skipped.append((name_text(str(path)), str(DataError(image.message, path=path))))
                continue
            header = read_header(path)  # the file's own size (reported as it is), frames, transparency
            if not isinstance(header, DecodeFailure):
                if headers is not None:
                    headers.append((str(path), header))
                yield path, image, (header.width, header.height)
            else:
                yield path, image, (int(image.shape[1]), int(image.shape[0]))


def _usable(
    decoded: Iterator[tuple[Path, np.ndarray, tuple[int, int]]], skip_bad: bool, skipped: list[tuple[str, str]]
) -> Iterator[tuple[Path, np.ndarray, tuple[int, int]]]:
    for path, image, size in decoded:
        # The file's own size: a resize policy (`stored_policy`) may have enlarged a 1x1 image
        width, height = min(size[0], image.shape[1]), min(size[1], image.shape[0])
        if height < MIN_SIDE or width < MIN_SIDE:
            small = DataError(f"image is only {width}x{height} pixels", path=path)
            if not skip_bad:
                raise small
            skipped.append((name_text(str(path)), str(small)))  # the reason names its file, as every other skip does
            continue
        yield path, image, size


def make_views(recipe: Any, params: Any, arrays: list[np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """The method's scoring views of uint8 H x W x 3 RGB arrays, made on `device` (one batch)."""
    # Decoded arrays may be read-only views of PIL buffers; torch wants writable memory.
    images = [torch.from_numpy(np.require(a, requirements="W")).to(device).permute(2, 0, 1) for a in arrays]
    with torch.no_grad():  # not inference mode: a method whose test time back-propagates uses them
        return recipe.scoring_views(images, params)


def score_views(
    recipe: Any,
    loaded: LoadedModel,
    views: dict[str, torch.Tensor],
    device: torch.device,
    dtype: Precision,
    *,
    names: list[Any] | None = None,
) -> np.ndarray:
    """Scores (float64, the training scale) of one batch of stored views with the method's test-time
    protocol; non-finite predictions are refused."""
    grad = torch.enable_grad if recipe.eval_needs_grad(loaded.params) else torch.inference_mode
    with grad():
        inputs_ = recipe.eval_inputs(views, loaded.params)
        with autocast(device, dtype):
            scores = recipe.predict_batch(loaded.model, inputs_, loaded.params)
            scores = scores.detach().float().cpu().numpy().astype(np.float64)
    if not np.isfinite(scores).all():
        index = int(np.flatnonzero(~np.isfinite(scores))[0])
        first = names[index] if names is not None else f"image {index}"
        raise CheckpointError(
            f"the model predicted a non-finite score for {first}: its weights are damaged or diverged",
            path=str(loaded.files.get("model", loaded.source)),
        )
    return scores


def score_arrays(
    recipe: Any,
    loaded: LoadedModel,
    arrays: list[np.ndarray],
    device: torch.device,
    dtype: Precision,
    *,
    names: list[Any] | None = None,
) -> np.ndarray:
    """Scores (float64, the training scale) of uint8 H x W x 3 RGB arrays with the method's test-time
    protocol, in one batch: views made on the device, non-finite predictions refused."""
    views = make_views(recipe, loaded.params, arrays, device)
    return score_views(recipe, loaded, views, device, dtype, names=names)


Batch = list[tuple[Path, tuple[int, int]]]  # each image's file and its own (width, height)


def _view_batches(
    images: Iterator[tuple[Path, np.ndarray, tuple[int, int]]], batch_size: int, make: Any
) -> Iterator[tuple[Batch, dict[str, torch.Tensor]]]:
    """(batch, its views): what the prefetch thread of `predict_files` makes ahead of the forward. The
    decoded pixels are dropped once the views are made, so batches waiting in the queue hold only views.
    Closing this generator (a consumer that stopped early) closes `images`, and the decode processes."""
    pixels: list[np.ndarray] = []
    batch: Batch = []
    try:
        for path, array, size in images:
            pixels.append(array)
            batch.append((path, size))
            if len(batch) >= batch_size:
                views, pixels = make(pixels), []  # not held while this generator waits at the yield
                yield batch, views
                batch = []
        if batch:
            views, pixels = make(pixels), []
            yield batch, views
    finally:
        close = getattr(images, "close", None)
        if close is not None:
            close()


def batches_ahead(view_shapes: dict[str, tuple[int, ...]], batch_size: int) -> int:
    """How many batches of (uint8) views the prefetch thread may hold: 2 to MAX_AHEAD, within QUEUED_VIEW_BYTES."""
    per_batch = batch_size * sum(math.prod(shape) for shape in view_shapes.values())
    return max(2, min(MAX_AHEAD, QUEUED_VIEW_BYTES // max(1, per_batch)))


def _prefetched_views(
    images: Iterator[tuple[Path, np.ndarray, tuple[int, int]]], batch_size: int, make: Any, *, depth: int = 2
) -> Prefetch[tuple[Batch, dict[str, torch.Tensor]]]:
    """`_view_batches` in a thread from now on: the decode hand-off and the view resizes run beside the
    forward, and the first batches are ready while the network is still being built. Closing it closes
    `images` (and the decode processes)."""
    return Prefetch(_view_batches(images, batch_size, make), depth=depth, name="iqa-predict-views")


def prediction_scale(recipe: Any, train_labels: LabelMap | None) -> str:
    """What a model's scores are on: the method's usual scale, or, for a model whose scores run lower-is-better
    (trained with `--label-scale native` on a DMOS dataset), its own labels and that direction."""
    if train_labels is not None and train_labels.lower_better:
        return f"training labels ({train_labels.description}), lower is better"
    return str(recipe.prediction_scale)


def predict_files(
    method: str,
    weights: str,
    inputs: list[str | Path],
    *,
    variant: str | None = None,
    skip_bad: bool = False,
    batch_size: int = 16,
    device: str = "auto",
    amp: str = "auto",
    progress: Progress | None = None,
    workers: int | None = None,
    test_options: dict[str, Any] | None = None,
) -> PredictReport:
    """Score `inputs` (files and folders). Images are decoded in `workers` processes (default: the
    cores iqa may use, less torch's threads when the network runs on the CPU), large JPEGs at a reduced
    DCT scale that keeps them well above the method's view sizes, and scored `batch_size` at a time
    with the views made on the device. `test_options` are the method's test-time options for image files
    (`Recipe.test_options(files=True)`, e.g. `{"branch": "teacher"}`), as `iqa predict METHOD` takes them."""
    if amp not in AMP_MODES:
        raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)}, got '{amp}'")
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")
    progress = progress or NullProgress()
    recipe = get_recipe(method)
    files = expand_inputs(inputs)
    spec = read_trained(recipe, weights, variant=variant)
    note = recipe.file_scoring_note(spec.meta, str(weights))
    if note is not None:
        log.warning(note)
    params = recipe.file_params(spec.params, spec.meta)  # what the training data set, before the user's options
    if test_options:
        params = apply_test_overrides(recipe, params, test_options, files=True)
    spec = replace(spec, params=params)
    torch_device = resolve_device(device)
    dtype = amp_dtype(amp, torch_device, evaluation=True)
    skipped: list[tuple[str, str]] = []
    from iqa_cli.data.decode import default_workers

    if workers is None:
        # On the CPU the forward already uses torch's threads: extra decode processes would only compete
        # with it (measured: slower on 2 cores), so they take the cores torch leaves free.
        spare = default_workers() - (torch.get_num_threads() if torch_device.type == "cpu" else 0)
        count = max(1, spare)
    else:
        count = max(1, int(workers))
    bound = recipe.view_bound(spec.params)
    policy = stored_policy(spec.meta)  # as the model's training cache stored its images
    if policy is not None:
        fixed = policy.kind == "fixed"
        log.info(
            f"images are resized as the model's training cache stored its images ({policy}) before their views"
            + ("; one of another aspect ratio is scaled to that size's shorter side, not squashed" if fixed else "")
        )
    log.debug(f"predict: {len(files)} files, {count} decode process(es), JPEGs reduced at decode to >= {bound} px")
    headers: list[tuple[str, ImageHeader]] = []
    decoded = _usable(
        _decoded(files, skip_bad, skipped, reduce_to=bound, policy=policy, workers=count, headers=headers),
        skip_bad,
        skipped,
    )
    batches = _prefetched_views(
        decoded,
        batch_size,
        lambda arrays: make_views(recipe, spec.params, arrays, torch_device),
        depth=batches_ahead(recipe.scoring_view_shapes(spec.params), batch_size),
    )
    with contextlib.ExitStack() as stack:  # the first batches decode while the network is built
        stack.enter_context(batches)
        stack.enter_context(inference_threads(torch_device))
        loaded = build_trained(recipe, spec)
        loaded.model.to(torch_device).eval()
        train_labels = loaded.train_labels
        if recipe.predicts_classes:
            train_labels = None  # class numbers: no dataset's native scale to map them to
        native = f"{loaded.meta.get('dataset')} native ({train_labels.description})" if train_labels else None
        report = PredictReport(
            method=method,
            weights=str(weights),
            scale=prediction_scale(recipe, train_labels),
            native_scale=native,
            skipped=skipped,
            resize=None if policy is None else str(policy),
        )
        progress.start("scoring images", len(files))
        for batch, views in batches:
            scores = score_views(recipe, loaded, views, torch_device, dtype, names=[path for path, _ in batch])
            natives = train_labels.to_native(scores) if train_labels else [None] * len(scores)
            details = recipe.prediction_details(scores) or [{} for _ in scores]
            for (path, (width, height)), score, value, detail in zip(batch, scores, natives, details, strict=True):
                score_native = None if value is None else float(value)
                report.predictions.append(
                    Prediction(name_text(str(path)), float(score), score_native, width, height, detail)
                )
            progress.advance(len(batch))
            raise_if_stopped()  # a signal's exception lost in a library must not let the scoring go on
    progress.advance(len(report.skipped))
    progress.finish()
    if not report.predictions:
        raise DataError(f"none of the {len(files)} input file(s) could be read as an image")
    scored = {p.path for p in report.predictions}
    report.notes = content_notes([(path, header) for path, header in headers if path in scored])
    tied = None if recipe.predicts_classes else scoring_ties([p.score for p in report.predictions], dtype)
    if tied is not None:
        report.notes.append(f"{tied} (--amp off scores in float32)")
    for text in report.notes:
        log.warning(text)
    return report
