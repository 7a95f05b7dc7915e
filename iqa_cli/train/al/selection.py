"""AL-IQA's sample selection, as pure functions of (scores, distances, budget, round) (methods spec §3.2).

One round picks `count` images from a pool of P images (the authors' `livew_rt25_*_step.py`):

1. Representativeness. `distance` is (R repeats, K distilled images, P). For every (distilled image,
   image) the `keep` (3) of the R (5) values closest to their mean are summed, then the sums over the
   distilled images: D_j. Rank r_D: the largest D gets P, the smallest 1, so a small rank means
   close to the distilled images (representative).
2. Uncertainty U_j: disagreement between prompt wordings (`template_disagreement`, round 1: zero-shot
   CLIP) or between the three learned heads (`head_disagreement`, later rounds). Rank r_U likewise.
3. The band: sort the pool by U, descending; the images at sorted positions [floor(P*st), floor(P*st) + band)
   get r_U overwritten with 0, -1, ..., -(band-1), in that order, which moves the band to the front.
   `st` slides from 0.66 (low uncertainty, "easy") through 0.33 to 0 (most uncertain, "hard").
4. Borda-style combination S = weight * r_D + r_U; the `count` smallest S are selected. Ties and
   order follow numpy's default argsort of S (reversed, taking its tail), as the authors' code.

Round sizes (`round_plan`) are fractions of the initial pool N, not of what remains: budget b % is
split 1:2:2 over three rounds (b/5, 2b/5, 2b/5 %). For the LIVEW 25 % run this is the authors' 5 % +
10 % + 10 %; for 5/10/80 % the schedule is inferred, and reproduces the sizes of the released KonIQ
index files (503, 1006, 2518, 8058 of 10073). Round 1 selects `len(arange(N - N*f, N))` images (one
more than its band when N*f is not whole: 59 for 5 % of 1169), as the authors' float `arange` does;
later rounds select exactly their band, int(N*f). A band that would run past the end of the
remaining pool is moved back to end there (never the case for the authors' schedules).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from iqa_cli.errors import ConfigError, DataError

DEFAULT_SHARES = (1, 2, 2)
DEFAULT_BAND_STARTS = (0.66, 0.33, 0.0)
DEFAULT_WEIGHTS = (0.01, 0.01, 0.005)
DEFAULT_KEEP = 3
DISTANCE_ORDERS = ("dataset", "authors")  # column order of a distance file: ours, or the authors' cache
DISTANCE_ORDER_ALIASES = {"esnthere": "authors"}  # the option value's earlier spelling


def check_distance_order(order: str | None) -> str:
    """The column order of a distance file, which must be said: a wrong guess permutes every image's
    distances without a trace."""
    if order is None:
        raise ConfigError(
            "--distances needs --distance-order: authors (the authors' files, such as livew_ds.mat, are in their "
            "cache order [X; Xtest]) or dataset (a file in this cache's image order)"
        )
    return order


@dataclass(frozen=True)
class RoundPlan:
    """What round `index` (1-based) of a budget selects, in images of the initial pool."""

    index: int
    fraction: float  # of the initial pool
    count: int  # images selected
    band: int  # images moved to the front by the uncertainty band
    band_start: float
    weight: float  # Borda weight of the representativeness rank


def round_plan(
    n_pool: int,
    budget: float,
    *,
    shares: Sequence[int] = DEFAULT_SHARES,
    band_starts: Sequence[float] = DEFAULT_BAND_STARTS,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    authors_counts: bool = True,
) -> list[RoundPlan]:
    """The rounds of a `budget` % labelling budget on a pool of `n_pool` images."""
    if not len(shares) == len(band_starts) == len(weights) or not shares:
        raise ConfigError(
            f"round_shares, band_starts and borda_weights need one value per round (got {len(shares)}, "
            f"{len(band_starts)} and {len(weights)})"
        )
    if not 0 < budget < 100:
        raise ConfigError(f"budget must be a percentage between 0 and 100, got {budget:g}")
    if any(s <= 0 for s in shares):
        raise ConfigError(f"round_shares must be positive, got {list(shares)}")
    if any(not 0.0 <= st < 1.0 for st in band_starts):
        raise ConfigError(f"band_starts must be in [0, 1), got {list(band_starts)}")
    total = sum(shares)
    plans, used = [], 0
    for index, (share, start, weight) in enumerate(zip(shares, band_starts, weights, strict=True), start=1):
        # budget * share / (100 * total) is correctly rounded: 25 % -> exactly the literals 0.05 and 0.1.
        fraction = budget * share / (100 * total)
        band = int(n_pool * fraction)
        count = band
        if index == 1 and authors_counts:
            count = int(np.arange(n_pool - n_pool * fraction, n_pool).size)
        if band < 1 or count < 1:
            raise ConfigError(
                f"a {budget:g} % budget gives round {index} no image to select from a pool of {n_pool} "
                "(raise --budget or use more images)"
            )
        used += count
        plans.append(RoundPlan(index, fraction, count, band, float(start), float(weight)))
    if used > n_pool:
        raise ConfigError(f"the rounds select {used} images, more than the pool's {n_pool}")
    return plans


# ------------------------------------------------------------------------------------------ signals


def round_plan_for(n_pool: int, params: Any) -> list[RoundPlan]:
    """`round_plan` with the budget and round settings of AL-IQA's parameters (`ALIQAParams`)."""
    return round_plan(
        n_pool,
        params.budget,
        shares=params.round_shares,
        band_starts=params.band_starts,
        weights=params.borda_weights,
        authors_counts=params.authors_counts,
    )


def trimmed_distance(distance: np.ndarray, keep: int = DEFAULT_KEEP) -> np.ndarray:
    """(R, K, P) distances -> (P,): per (k, j) the `keep` of R values closest to their mean, summed over both."""
    distance = np.asarray(distance)
    if distance.ndim != 3:
        raise DataError(f"distances must be (repeats, distilled images, images), got shape {distance.shape}")
    if not 1 <= keep <= distance.shape[0]:
        raise ConfigError(f"cannot keep {keep} of {distance.shape[0]} repeated distances")
    deviation = np.abs(distance - distance.mean(axis=0, keepdims=True))
    closest = np.argsort(deviation, axis=0)[:keep]
    return np.take_along_axis(distance, closest, axis=0).sum(0).sum(0)


def zero_shot_source(params: Any) -> str:
    """What round 1's uncertainty came from: CLIP's zero-shot prompts, or, without pretrained weights
    (`--tiny`, `--pretrained none`), an untrained CLIP whose prompt scores are noise."""
    if getattr(params, "pretrained", None):
        return "zero-shot CLIP, 6 antonym pairs x 3 templates"
    return (
        "untrained CLIP (no pretrained weights: --tiny or --pretrained none), random prompt scores, not "
        "AL-IQA's zero-shot signal"
    )


def template_disagreement(probabilities: np.ndarray) -> np.ndarray:
    """(pairs, templates, P) p(first class) of zero-shot prompts -> (P,): std over templates, summed over pairs."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 3:
        raise ValueError(f"expected (pairs, templates, images) probabilities, got shape {probabilities.shape}")
    return probabilities.std(axis=1).sum(axis=0)


def head_disagreement(probabilities: np.ndarray) -> np.ndarray:
    """(P, heads) p(first class) of the learned heads -> (P,): std over the heads."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2:
        raise ValueError(f"expected (images, heads) probabilities, got shape {probabilities.shape}")
    return probabilities.std(axis=1)


# ------------------------------------------------------------------------------------ the rule


def descending_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..P with the largest value getting P (ties as numpy's default argsort orders them)."""
    values = np.asarray(values)
    ranks = np.empty(values.size, dtype=np.int64)
    ranks[np.argsort(values)] = np.arange(1, values.size + 1)
    return ranks


def band_ranks(uncertainty: np.ndarray, band: int, band_start: float) -> tuple[np.ndarray, np.ndarray]:
    """Uncertainty ranks with the band moved to the front (0, -1, ...), and the band's pool positions."""
    uncertainty = np.asarray(uncertainty)
    size = uncertainty.size
    ranks = descending_ranks(uncertainty)
    by_uncertainty = np.argsort(uncertainty)[::-1]
    start = min(int(size * band_start), size - band)
    positions = by_uncertainty[start : start + band]
    ranks[positions] = np.arange(0, -band, -1)
    return ranks, positions


@dataclass(frozen=True)
class Selection:
    positions: np.ndarray  # pool positions of the selected images, in the authors' order
    score: np.ndarray  # combined score S per pool position (smaller = picked first)
    band: np.ndarray  # pool positions inside the uncertainty band
    uncertainty_rank: np.ndarray
    distance_rank: np.ndarray


def select_round(
    uncertainty: np.ndarray,
    representativeness: np.ndarray,
    *,
    count: int,
    band: int,
    band_start: float,
    weight: float,
) -> Selection:
    """One round's choice from a pool (both arrays in pool order; `representativeness` is D, smaller = closer)."""
    uncertainty = np.asarray(uncertainty, dtype=np.float64).reshape(-1)
    representativeness = np.asarray(representativeness, dtype=np.float64).reshape(-1)
    size = uncertainty.size
    if representativeness.size != size:
        raise ValueError(f"{size} uncertainties but {representativeness.size} distances")
    if not (np.isfinite(uncertainty).all() and np.isfinite(representativeness).all()):
        raise DataError("uncertainties and distances must be finite")
    if not 1 <= band <= size or not 1 <= count <= size:
        raise ConfigError(f"cannot select {count} (band {band}) of a pool of {size} images")
    r_u, in_band = band_ranks(uncertainty, band, band_start)
    r_d = descending_ranks(representativeness)
    score = weight * r_d + r_u
    ranking = np.argsort(score)[::-1]
    return Selection(ranking[size - count :], score, in_band, r_u, r_d)


def select_for_round(
    uncertainty: np.ndarray,
    distance: np.ndarray,
    plan: RoundPlan,
    *,
    keep: int = DEFAULT_KEEP,
) -> Selection:
    """The whole rule for one round of a plan: (P,) uncertainties and (R, K, P) distances of the images
    still unlabelled -> the selection (`round_plan(initial pool, budget)[round - 1]` gives `plan`)."""
    return select_round(
        uncertainty,
        trimmed_distance(distance, keep),
        count=plan.count,
        band=plan.band,
        band_start=plan.band_start,
        weight=plan.weight,
    )
