"""The Python API: score images from Python in two lines, and the functions the CLI calls.

    import iqa_cli
    scorer = iqa_cli.load("vtiqa_koniq10k")        # a weights-store name, a file, or a run
    scores = scorer(["a.jpg", "b.png"])            # numpy array, the model's training scale

`load` reads the method from the checkpoint when it is not given; the scorer keeps the network loaded
and applies the method's own test-time protocol (the same numbers as `iqa predict`). `methods()` lists
the methods; `prepare`, `train` and `evaluate` are the functions behind `iqa prepare`, `iqa train`
and `iqa eval`, with the same parameters, returning plain dataclasses or dicts.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iqa_cli.errors import ConfigError, DataError

log = logging.getLogger(__name__)

ImageInput = Any  # a path, a folder, a list of paths, a PIL image, a uint8 H x W x 3 array, a tensor batch


@contextlib.contextmanager
def callers_state_kept() -> Iterator[None]:
    """Leave the caller's process as it was: torch's intra-op thread count and the global random number
    generators (torch's, CUDA's where started, numpy's, Python's). A run seeds them and sets the threads
    by iqa's policy (one core left for its own threads), which a notebook's own work after the call
    would otherwise inherit: one torch thread on a 2-core laptop, and `torch.rand` replaying iqa's seed."""
    import torch

    threads = torch.get_num_threads()
    torch_state = torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        torch.random.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def methods() -> list[str]:
    """The methods `iqa` trains, evaluates and scores with (`vtiqa`, `ieit`, `aliqa`, ...)."""
    from iqa_cli.train.recipes import recipe_names

    return recipe_names()


def _method_of(weights: str | Path) -> str:
    """The method recorded in a checkpoint (or a run's record)."""
    from iqa_cli.models.checkpoint import read_state_dict
    from iqa_cli.weights.registry import find_known

    path = Path(str(weights)).expanduser()
    if (path / "run.json").is_file():
        from iqa_cli.train.runs import read_run

        method = read_run(path).get("method")
        if not isinstance(method, str) or not method:
            raise ConfigError(f"{path / 'run.json'}: the run's record names no method; pass method=...")
        return method
    known = find_known(str(weights))
    if known is not None and known.method:
        # Registry methods name networks; the original VT-IQA's parts (vtiqa-org-*) are scored by `vtiqa`.
        return known.method if known.method in methods() else known.method.split("-")[0]
    if not path.is_file():
        from iqa_cli.weights.store import WeightStore

        path = WeightStore().path(str(weights))
    _, meta = read_state_dict(path)
    method = meta.get("method")
    if not method:
        raise ConfigError(f"{weights}: the checkpoint does not say its method; pass method=...")
    if method not in methods():  # an imported authors' file records its network (ssliqa-student)
        from iqa_cli.train.recipes import get_recipe

        owners = [name for name in methods() if get_recipe(name).imported_params(method) is not None]
        if len(owners) == 1:
            return owners[0]
    return method


def resolve_weights_arg(weights: str | Path, method: str, split: str | None = None) -> str:
    """A run name or folder becomes the kept model of one of its splits (`split`, else the first)."""
    from iqa_cli.train.runs import BEST, find_weights_run, split_dir
    from iqa_cli.train.weights import run_weights

    text = str(weights)
    path = Path(text).expanduser()
    if path.is_file():
        return text
    try:
        root = find_weights_run(text)
    except ConfigError:
        return text  # a weights-store name (or a file that does not exist: the loader says so)
    run = run_weights(root)
    if run.info.get("method") not in (None, method):
        raise ConfigError(f"run {root} trained '{run.info.get('method')}', not '{method}'")
    splits = list(run.info.get("splits") or {})
    if split is not None:
        wanted = [s for s in (split, f"random_{split}") if s in splits]
        if not wanted:
            raise ConfigError(f"run {root} has no split '{split}' (trained: {', '.join(splits)})")
        splits = wanted
    for name in splits:
        if name in run.by_split:
            if split is None and len(run.by_split) > 1:
                # One of several kept models scores: say which, so the numbers are not taken for the run's.
                log.info(
                    f"note: run {root.name} kept {len(run.by_split)} models, one per split; scoring with split "
                    f"{name}'s (--split chooses another)"
                )
            return str(run.by_split[name])
    so_far = [name for name in splits if (split_dir(root, name) / BEST).is_file()]
    if so_far:  # a split still training, stopped or failed: its best model so far is no result of the run
        raise ConfigError(
            f"run {root}: split {so_far[0]} is {run.unfinished[so_far[0]]}, not finished; finish it with `iqa train "
            f"{method} --resume --out {root}`, or pass {split_dir(root, so_far[0]) / BEST} to score with that model "
            "as it stands"
        )
    raise ConfigError(f"run {root} has no kept model yet (no {BEST} in its split folders)")


class Scorer:
    """A loaded quality model: `scorer(x)` or `scorer.score(x)` gives one score per image.

    Inputs: a path, a folder (every image in it, recursively), a list of paths, a PIL image, a uint8
    H x W x 3 RGB array (or a list of them), or a tensor batch (N, 3, H, W): float in [0, 1], or uint8
    0-255 (never rescaled). A folder's images are scored in path order; `files(x)` names the file
    behind each score. Returns a
    numpy array (a tensor for tensor input) on the model's native training scale (1-5 for VT-IQA,
    IEIT, AL-IQA and SSL-IQA); `native(scores)` maps them to the training dataset's own scale. VIPNet's
    distortion perception model (`vipnet-dpm`) gives its predicted class instead, and `details(scores)`
    names the distortion type and level of each.
    """

    def __init__(self, method: str, weights: str, *, device: str = "auto", amp: str = "auto", batch_size: int = 16,
                 **test_options: Any) -> None:  # fmt: skip
        import torch

        from iqa_cli.train.config import AMP_MODES
        from iqa_cli.train.distributed import resolve_device
        from iqa_cli.train.precision import amp_dtype
        from iqa_cli.train.predict import stored_policy
        from iqa_cli.train.recipes import get_recipe
        from iqa_cli.train.weights import apply_test_overrides, load_trained

        if amp not in AMP_MODES:
            raise ConfigError(f"amp must be one of {', '.join(AMP_MODES)}, got '{amp}'")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        self.method, self.weights, self.batch_size = method, weights, batch_size
        self.recipe = get_recipe(method)
        self.loaded = load_trained(self.recipe, weights)
        note = self.recipe.file_scoring_note(self.loaded.meta, str(weights))
        if note is not None:
            log.warning(note)
        params = self.recipe.file_params(self.loaded.params, self.loaded.meta)  # as `iqa predict`
        self.loaded.params = apply_test_overrides(self.recipe, params, test_options, files=True)
        # Images are resized as the model's training cache stored its images ('short:768'), as `iqa predict`.
        self.policy = stored_policy(self.loaded.meta)
        with callers_state_kept():  # the scorer's own calls set the threads while they run
            self.device = resolve_device(device)
        self.dtype = amp_dtype(amp, self.device, evaluation=True)
        self.loaded.model.to(self.device).eval()
        self._torch = torch

    def __call__(self, images: ImageInput) -> Any:
        return self.score(images)

    def __repr__(self) -> str:
        return f"Scorer(method={self.method!r}, weights={self.weights!r}, device={str(self.device)!r})"

    def native(self, scores: Any) -> np.ndarray:
        """Scores on the training dataset's native scale (e.g. KonIQ's MOS; for VIPNet, KonIQ's MOS_zscore, the
        column it trained on), when the checkpoint says how."""
        labels = self.loaded.train_labels
        if labels is None:
            raise ConfigError(f"{self.weights}: the checkpoint does not record its label mapping")
        return labels.to_native(np.asarray(scores, dtype=np.float64))

    @property
    def lower_better(self) -> bool | None:
        """Whether this model's lower scores mean better quality (a model trained with `label_scale="native"`
        on a DMOS dataset); None when the checkpoint does not record it. Other models score higher-is-better."""
        labels = self.loaded.train_labels
        return None if labels is None or self.recipe.predicts_classes else labels.lower_better

    def details(self, scores: Any) -> list[dict[str, Any]]:
        """What each prediction stands for where it is no quality score (a distortion class: its type, name
        and level)."""
        if not self.recipe.predicts_classes:
            raise ConfigError(f"{self.method} gives quality scores, not classes: there are no details to name")
        return self.recipe.prediction_details(np.asarray(scores, dtype=np.float64)) or []

    def files(self, images: ImageInput) -> list[str]:
        """The image files `score(images)` reads, in the order of its scores: a folder gives more scores
        than the items it was named in (its images, recursively, sorted by path), so pair scores with
        these, not with the paths you passed. Items that are no path (an array, a PIL image, a tensor)
        stand as '' where their scores are."""
        if isinstance(images, self._torch.Tensor):
            return [""] * (1 if images.ndim == 3 else int(images.shape[0]))
        if isinstance(images, (str, Path)):
            from iqa_cli.fsnames import name_text
            from iqa_cli.train.predict import expand_inputs

            return [name_text(str(path)) for path in expand_inputs([images])]
        if isinstance(images, np.ndarray):
            return [""] * (int(images.shape[0]) if images.ndim == 4 else 1)
        if isinstance(images, Sequence) and not isinstance(images, (bytes, bytearray, memoryview)):
            return [name for item in images for name in self.files(item)]
        return [""]

    def score(self, images: ImageInput) -> Any:
        torch = self._torch
        as_tensor = isinstance(images, torch.Tensor)
        arrays = self._arrays(images)
        if not arrays:
            raise DataError("no images to score")
        from iqa_cli.train.predict import MIN_SIDE

        for i, array in enumerate(arrays):
            if array.shape[0] < 1 or array.shape[1] < 1:  # views of no pixels would divide by zero
                raise DataError(f"image {i} has no pixels (H x W = {array.shape[0]} x {array.shape[1]})")
            if array.shape[0] < MIN_SIDE or array.shape[1] < MIN_SIDE:  # refused by `iqa predict` too
                raise DataError(f"image {i} is only {array.shape[1]}x{array.shape[0]} pixels")
        from iqa_cli.threads import inference_threads
        from iqa_cli.train.predict import apply_policy, score_arrays, scoring_ties

        arrays = [apply_policy(array, self.policy) for array in arrays]

        with inference_threads(self.device):
            out = np.concatenate(
                [
                    score_arrays(self.recipe, self.loaded, arrays[i : i + self.batch_size], self.device, self.dtype)
                    for i in range(0, len(arrays), self.batch_size)
                ]
            )
        tied = None if self.recipe.predicts_classes else scoring_ties(out, self.dtype)
        if tied is not None:
            log.warning(f"{tied} (amp='off' scores in float32)")
        return torch.from_numpy(out) if as_tensor else out

    def _arrays(self, images: ImageInput) -> list[np.ndarray]:
        torch = self._torch
        if isinstance(images, torch.Tensor):
            batch = images.detach().cpu()
            if batch.ndim == 3:
                batch = batch.unsqueeze(0)
            if batch.ndim != 4 or batch.shape[1] != 3:
                raise DataError(f"a tensor must be (N, 3, H, W), got shape {tuple(images.shape)}")
            if batch.dtype == torch.uint8:  # 0-255 as stored: never rescaled, however dark the image
                return list(batch.permute(0, 2, 3, 1).contiguous().numpy())
            if not batch.is_floating_point():
                raise DataError(f"a tensor must be uint8 (0-255) or float (0-1), got {images.dtype}")
            batch = batch.float()
            if batch.numel() == 0:  # no images, or images of no pixels: said by `score`
                return [a for a in batch.to(torch.uint8).permute(0, 2, 3, 1).numpy()]
            if not bool(torch.isfinite(batch).all()):  # NaN passes both bounds below and would score as black
                raise DataError("a float tensor holds NaN or infinite values (expected values in [0, 1])")
            if float(batch.min()) < 0 or float(batch.max()) > 1:
                raise DataError("a float tensor must hold values in [0, 1] (a uint8 tensor holds 0-255)")
            return [a for a in (batch * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()]
        if isinstance(images, (str, Path)):
            from iqa_cli.train.predict import expand_inputs, read_image

            bound = self.recipe.view_bound(self.loaded.params)  # large JPEGs decode reduced, as `iqa predict`
            return [read_image(p, bound, self.policy) for p in expand_inputs([images])]
        if isinstance(images, np.ndarray):
            if images.ndim == 4:
                return [self._array(a) for a in images]
            return [self._array(images)]
        from PIL import Image

        if isinstance(images, Image.Image):
            from PIL import ImageOps

            from iqa_cli.data.decode import to_rgb8

            # As a file of it decodes: EXIF orientation applied (an image already turned upright by
            # `exif_transpose` has no orientation tag left), 16-bit images scaled onto 0-255.
            upright = ImageOps.exif_transpose(images) or images
            return [np.asarray(to_rgb8(upright), dtype=np.uint8)]
        if isinstance(images, (bytes, bytearray, memoryview)):  # a Sequence of ints: "cannot score a int"
            raise DataError(
                "cannot score raw bytes: give the file's path, or open them with PIL.Image.open(io.BytesIO(data))"
            )
        if isinstance(images, Sequence):
            out: list[np.ndarray] = []
            for item in images:
                out.extend(self._arrays(item))
            return out
        raise DataError(f"cannot score a {type(images).__name__} (expected paths, PIL images, arrays or a tensor)")

    @staticmethod
    def _array(array: np.ndarray) -> np.ndarray:
        if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
            raise DataError(f"an array must be uint8 H x W x 3 RGB, got {array.dtype} {array.shape}")
        return np.ascontiguousarray(array)


def load(
    weights: str | Path,
    method: str | None = None,
    device: str = "auto",
    *,
    split: str | None = None,
    amp: str = "auto",
    batch_size: int = 16,
    **test_options: Any,
) -> Scorer:
    """A `Scorer` for `weights`: a checkpoint file, a weights-store name, or a run (name or folder;
    `split` picks the split's kept model). `method` is read from the checkpoint when not given;
    `test_options` are the method's test-time options (e.g. `test_crops=10`, `branch="teacher"`)."""
    if method is None:
        probe = Path(str(weights)).expanduser()
        try:
            from iqa_cli.train.runs import find_weights_run

            probe = find_weights_run(str(weights))
        except ConfigError:
            pass
        method = _method_of(probe if (probe / "run.json").is_file() else weights)
    resolved = resolve_weights_arg(weights, method, split)
    return Scorer(method, resolved, device=device, amp=amp, batch_size=batch_size, **test_options)


# `iqa prepare custom`'s own options (`make_spec`'s parameters): `csv` (default: the only .csv in the
# root), `name`, `score_type`, `native_range` (LO, HI), `lower_better`, `columns` ("NAME,SCORE[,STD]"),
# `references` (the header column naming each image's reference: reference-disjoint splits).
CUSTOM_OPTIONS = ("csv", "name", "score_type", "native_range", "lower_better", "columns", "references")


def prepare(dataset: str, root: str | Path, out: str | Path | None = None, **options: Any) -> Any:
    """Build a cache as `iqa prepare DATASET --root ROOT` does; returns the `CacheSummary`. `options` are
    `CacheOptions` fields (`resize="244x244"`, `workers=4`, ...) and `progress`; for `custom`, also
    `CUSTOM_OPTIONS` (`name="mine", native_range=(1, 5)`, ...)."""
    from dataclasses import fields

    from iqa_cli.data.cache import CacheOptions, build_cache
    from iqa_cli.data.datasets import get_dataset
    from iqa_cli.home import default_cache_path

    progress = options.pop("progress", None)
    spec = get_dataset(dataset)
    custom = {k: options.pop(k) for k in CUSTOM_OPTIONS if k in options} if spec.name == "custom" else {}
    unknown = sorted(set(options) - {f.name for f in fields(CacheOptions)})
    if unknown:
        extra = f", {', '.join(CUSTOM_OPTIONS)}" if spec.name == "custom" else ""
        raise ConfigError(
            f"prepare: unknown option(s) {', '.join(unknown)} (options: "
            f"{', '.join(sorted(f.name for f in fields(CacheOptions)))}{extra}, progress)"
        )
    if spec.name == "custom":
        from iqa_cli.data.datasets.custom import make_spec

        csv_path, native_range = custom.pop("csv", None), custom.pop("native_range", None)
        spec = make_spec(
            custom.pop("name", "custom"),
            Path(csv_path) if csv_path is not None else None,
            root=Path(root),
            native_range=tuple(native_range) if native_range is not None else None,
            **custom,
        )
    target = Path(out) if out is not None else default_cache_path(spec.name)
    with callers_state_kept():
        return build_cache(spec, Path(root), target, CacheOptions(**options), progress=progress)


def train(method: str, data: str | Path, **options: Any) -> dict[str, Any] | None:
    """Train as `iqa train METHOD --data DATA` does; options are the flags' names with `_` (`epochs=10`,
    `split="all"`, `tiny=True`, `out=...`). Returns the results summary (`results.json`)."""
    from iqa_cli.train.trainer import TrainOptions
    from iqa_cli.train.trainer import train as run_training

    common = {k: options.pop(k) for k in ("split", "config_file", "tiny", "out", "name", "resume") if k in options}
    with callers_state_kept():
        return run_training(TrainOptions(method=method, data=data, overrides=options, **common))


def evaluate(method: str, data: str | Path | None = None, **options: Any) -> Any:
    """Evaluate as `iqa eval METHOD --data DATA` does (options: split, cross, weights, ..., and the method's
    test-time options such as `test_crops=1`, as the flags of `iqa eval METHOD`); returns the `EvalReport`
    (`.as_dict()` for JSON)."""
    from dataclasses import fields

    from iqa_cli.train.evaluate import EvalOptions
    from iqa_cli.train.evaluate import evaluate as run_evaluation
    from iqa_cli.train.recipes import get_recipe

    known = {f.name for f in fields(EvalOptions)} - {"method", "data"}
    test_time = set(get_recipe(method).test_options())
    unknown = sorted(set(options) - known - test_time)
    if unknown:
        raise ConfigError(
            f"evaluate: unknown option(s) {', '.join(unknown)} (options: {', '.join(sorted(known - {'overrides'}))}; "
            f"{method}'s test-time options: {', '.join(sorted(test_time)) or 'none'})"
        )
    cross = options.get("cross")
    if isinstance(cross, str) and "," in cross and not Path(cross).expanduser().exists():
        raise ConfigError(
            f"evaluate: cross={cross!r} names several datasets; cross takes one (call evaluate once per dataset, as "
            "`iqa eval --cross a,b` does)"
        )
    overrides = dict(options.pop("overrides", None) or {})
    overrides.update({k: options.pop(k) for k in list(options) if k in test_time})
    with callers_state_kept():
        return run_evaluation(EvalOptions(method=method, data=data, overrides=overrides, **options))
