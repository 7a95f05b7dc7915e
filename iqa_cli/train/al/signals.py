"""The two signals AL-IQA's selection combines, computed from a model and a pool of images.

Uncertainty (methods spec §3.2):
* round 1, `zero_shot_probabilities`: untrained CLIP with 6 antonym pairs x 3 templates (the
  authors' `save_first_vote.py`); p(first class) of each (pair, template). The untrained prompt
  learners of that script are exactly these sentences (their context is the template's word
  embeddings), so plain sentences through `encode_texts` give the same text features.
* later rounds, `head_probabilities`: the previous round's kept model, p(first class) of its three
  learned heads (`save_{second,third}_vote.py`).

Representativeness: the authors' distances to distilled images (`livew_ds.mat`, key `distance`,
(5 repeats, 50 distilled images, N)) come from dataset distillation code that was never released.
`read_distance_file` accepts such a file; `kmeans_distances` is our documented STAND-IN: 5 seeded
repeats of k-means with 50 centroids on the L2-normalised CLIP image features of the pool, the
centroids playing the distilled images, with Euclidean distances in that feature space.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from iqa_cli.errors import ConfigError, DataError
from iqa_cli.progress import NullProgress, Progress
from iqa_cli.train.al.selection import DISTANCE_ORDER_ALIASES, DISTANCE_ORDERS, check_distance_order
from iqa_cli.train.data import DatasetLike
from iqa_cli.train.distributed import DistContext
from iqa_cli.train.precision import Precision
from iqa_cli.train.recipes.base import BaseParams, Recipe, Views
from iqa_cli.train.scoring import predict_scores
from iqa_cli.train.views import ViewStore, preload_budget

if TYPE_CHECKING:
    from iqa_cli.models.aliqa import ALIQA

GENERIC_TEMPLATES = ("this photo is {}.", "{} photo.", "this is a {} photo.")
NOISE_TEMPLATES = ("the noise in this photo is {}.", "{} noise is in this photo.", "this photo has {} noise.")
QUALITY_TEMPLATES = ("It's a photo of {}.", "{} photo.", "this is a {} photo.")
# (pair, templates) in the rows' order of the authors' prompt3vote_livew.mat.
ZERO_SHOT_PROMPTS: tuple[tuple[tuple[str, str], tuple[str, ...]], ...] = (
    (("bright", "dark"), GENERIC_TEMPLATES),
    (("sharp", "blurry"), GENERIC_TEMPLATES),
    (("clear", "unclear"), GENERIC_TEMPLATES),
    (("good", "bad"), GENERIC_TEMPLATES),
    (("obvious", "unobvious"), NOISE_TEMPLATES),
    (("high quality", "low quality"), QUALITY_TEMPLATES),
)
KMEANS_ITERATIONS = 50


class Outputs:
    """The recipe as `predict_scores` sees it, except that a batch's prediction is any per-image output
    of the network (e.g. all heads' probabilities, or image features); everything else is the recipe's."""

    def __init__(self, recipe: Recipe[Any], output: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        self.recipe, self.output = recipe, output

    def __getattr__(self, name: str) -> Any:
        return getattr(self.recipe, name)

    def eval_needs_grad(self, params: BaseParams) -> bool:
        return False

    def eval_inputs(self, views: Views, params: BaseParams) -> tuple[torch.Tensor, ...]:
        return self.recipe.eval_inputs(views, params)

    def predict(self, model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        return self.output(model, *inputs)

    def predict_batch(self, model: nn.Module, inputs: tuple[torch.Tensor, ...], params: BaseParams) -> torch.Tensor:
        return self.output(model, *inputs)


def all_heads(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """(B, heads) p(first class) of every prompt learner."""
    from iqa_cli.models.aliqa import positive_probability

    return torch.stack([positive_probability(logits) for logits in model(image)], dim=1)


def image_features(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    return cast("ALIQA", model).encode_image(image)


@dataclass
class PoolScorer:
    """Runs a model over dataset images with the recipe's test-time view (sharded under DDP)."""

    recipe: Recipe[Any]
    params: BaseParams
    dataset: DatasetLike
    device: torch.device
    dtype: Precision = None
    dist: DistContext = field(default_factory=DistContext)
    progress: Progress = field(default_factory=NullProgress)
    preload_gb: float | None = None
    _store: ViewStore | None = None
    _stored: np.ndarray | None = None

    def _views(self, indices: np.ndarray) -> ViewStore:
        if self._store is None or self._stored is None or not np.isin(indices, self._stored).all():
            self._stored = np.unique(indices)
            self._store = ViewStore(
                self.dataset,
                self.recipe,
                self.params,
                self.device,
                self._stored,
                budget_bytes=preload_budget(self.preload_gb),
                progress=self.progress if self.dist.is_main else NullProgress(),
            )
        return self._store

    def release(self) -> None:
        self._store, self._stored = None, None

    def run(
        self,
        model: nn.Module,
        indices: np.ndarray,
        output: Callable[[nn.Module, torch.Tensor], torch.Tensor],
        what: str,
    ) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        store = self._views(indices)
        model.to(self.device).eval()
        progress = self.progress if self.dist.is_main else NullProgress()
        progress.start(what, int(indices.size))
        out = predict_scores(
            Outputs(self.recipe, output),
            self.params,
            model,
            store,
            indices,
            device=self.device,
            dtype=self.dtype,
            dist=self.dist,
            progress=progress,
        )
        progress.finish()
        return out

    def features(self, model: nn.Module, indices: np.ndarray) -> np.ndarray:
        return self.run(model, indices, image_features, "image features")

    def heads(self, model: nn.Module, indices: np.ndarray) -> np.ndarray:
        return self.run(model, indices, all_heads, "scoring the pool with the previous round's prompts")


@torch.no_grad()
def zero_shot_probabilities(network: nn.Module, features: np.ndarray) -> np.ndarray:
    """(pairs, templates, P) p(first class) of the zero-shot prompts, from (P, d) image features."""
    model = cast("ALIQA", network)
    device = model.token_embedding.device
    image = torch.as_tensor(features, dtype=torch.float32, device=device)
    rows = []
    for pair, templates in ZERO_SHOT_PROMPTS:
        per_template = []
        for template in templates:
            text = model.encode_texts([template.format(name) for name in pair]).float()
            logits = model.logits(image, text)
            per_template.append(logits.softmax(dim=-1)[:, 0])
        rows.append(torch.stack(per_template))
    return torch.stack(rows).double().cpu().numpy()


# ------------------------------------------------------------------------------ representativeness


def normalise_rows(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.where(norms > 0, norms, 1.0)


def pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances (len(a), len(b))."""
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def kmeans(points: np.ndarray, k: int, seed: int, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """(k, d) centroids: k-means++ seeding from `seed`, then Lloyd iterations (empty clusters keep their centroid)."""
    rng = np.random.default_rng(seed)
    n = points.shape[0]
    centroids = [points[rng.integers(n)]]
    closest = pairwise_distances(points, centroids[0][None])[:, 0] ** 2
    for _ in range(1, k):
        total = closest.sum()
        pick = rng.choice(n, p=closest / total) if total > 0 else rng.integers(n)
        centroids.append(points[pick])
        closest = np.minimum(closest, pairwise_distances(points, points[pick][None])[:, 0] ** 2)
    centres = np.stack(centroids)
    assignment = np.full(n, -1)
    for _ in range(iterations):
        new = pairwise_distances(points, centres).argmin(axis=1)
        if np.array_equal(new, assignment):
            break
        assignment = new
        for c in range(k):
            members = points[assignment == c]
            if len(members):
                centres[c] = members.mean(axis=0)
    return centres


def kmeans_distances(features: np.ndarray, *, centroids: int = 50, repeats: int = 5, seed: int = 0) -> np.ndarray:
    """The stand-in for distances to distilled images: (repeats, k, P), k = min(centroids, P)."""
    points = normalise_rows(features)
    k = min(centroids, points.shape[0])
    return np.stack([pairwise_distances(kmeans(points, k, seed=seed * 1000 + r), points) for r in range(repeats)])


def esnthere_order(dataset: Any) -> np.ndarray:
    """Dataset index of each column in the authors' cache order [X; Xtest] (their prep order, e.g. KonIQ
    sorted by name, then the seed-0 permutation). `dataset`: a cache, or an image count (metadata order)."""
    from iqa_cli.data.authors_splits import ImageList, esnthere_prep_order

    image_list = getattr(dataset, "image_list", None)
    if image_list is not None:
        return esnthere_prep_order(image_list())
    n = int(dataset) if isinstance(dataset, (int, np.integer)) else len(dataset)
    # No names to order by: an anonymous list in metadata order, as the protocol splits treat a count.
    return esnthere_prep_order(ImageList("", [str(i) for i in range(n)], np.zeros(n, np.uint8), np.full(n, -1)))


# Digests (`distances_digest`) of distance files the authors published, whose columns are in their cache
# order [X; Xtest]: AL-IQA's training/livew_ds.mat (esnthere/AL-IQA @ 4583c46, measured on that file).
PUBLISHED_DISTANCES = {
    "b8ed299d138da1622e6e6d40b7b1d6e4a9150c01120ffd704854fb3915cd7303": "livew_ds.mat of esnthere/AL-IQA",
}


def distances_digest(array: np.ndarray) -> str:
    """SHA-256 of a distance array's shape and float64 values: the same however the file was saved."""
    values = np.ascontiguousarray(array, dtype="<f8")
    return hashlib.sha256(repr(values.shape).encode() + values.tobytes()).hexdigest()


def read_distance_file(
    path: str | Path, *, key: str, n_images: int, order: str | None = None, dataset: Any = None
) -> np.ndarray:
    """(repeats, distilled images, N) distances in dataset order, from .mat (key), .npy or .npz (key or only array).

    `order='esnthere'` reads columns in the authors' cache order [X; Xtest] of `dataset` (see
    `esnthere_order`), e.g. `livew_ds.mat` against a cache from `iqa prepare livew` (all 1,169 images)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError("distance file not found (expected .mat, .npy or .npz)", path=path)
    suffix = path.suffix.lower()
    if suffix == ".mat":
        from iqa_cli.data.datasets._files import load_mat

        array = load_mat(path, [key])[key]
    elif suffix in (".npy", ".npz"):
        try:
            loaded: Any = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read numpy file ({exc})", path=path) from None
        if suffix == ".npz":
            names = list(loaded.files)
            if key in names:
                array = loaded[key]
            elif len(names) == 1:
                array = loaded[names[0]]
            else:
                raise DataError(f"has no array {key!r} (found: {', '.join(names) or 'none'})", path=path)
        else:
            array = loaded
    else:
        raise DataError("unknown distance file type (expected .mat, .npy or .npz)", path=path)
    array = np.asarray(array)
    if array.ndim != 3 or array.dtype.kind not in "fiu":
        raise DataError(
            f"distances must be a numeric (repeats, distilled images, images) array, got {array.dtype} {array.shape}",
            path=path,
        )
    if array.shape[2] != n_images:
        raise DataError(f"has distances for {array.shape[2]} images, the dataset has {n_images}", path=path)
    if not np.isfinite(array).all():
        raise DataError("distances must be finite", path=path)
    array = array.astype(np.float64)
    order = check_distance_order(order)
    order = DISTANCE_ORDER_ALIASES.get(order, order)
    published = PUBLISHED_DISTANCES.get(distances_digest(array))
    if published is not None and order == "dataset":
        # read in the cache's order, every image would get another image's distances, and nothing could tell
        raise ConfigError(
            f"--distances {path.name} is the authors' {published}, whose columns are in their cache order "
            "[X; Xtest]: use --distance-order authors"
        )
    if order == "authors":
        out = np.empty_like(array)
        out[:, :, esnthere_order(n_images if dataset is None else dataset)] = array
        return out
    if order != "dataset":
        raise ConfigError(f"distance_order must be one of {', '.join(DISTANCE_ORDERS)}, got '{order}'")
    return array
