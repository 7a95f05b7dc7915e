"""What every dataset parser returns, and what it declares about its dataset."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# Bits of `Record.flags` (stored per image as the cache's optional `flags` array).
TRAINING_IMAGE = 1  # LIVE Challenge's 7 subject-training images: kept, but left out of seeded random splits


@dataclass(frozen=True)
class Record:
    """One labelled image of a dataset, as found on disk."""

    path: Path  # absolute path of the image file
    name: str  # path relative to the dataset root, with '/' separators (stored in the cache)
    score: float  # native score, unchanged (MOS, DMOS, ...)
    std: float = math.nan  # native std of the score where the dataset gives one
    ref_id: int = -1  # reference image id for synthetic (FR) datasets, -1 otherwise
    official_set: str | None = None  # e.g. KonIQ's 'training'/'validation'/'test'
    # Share of ratings per category, lowest first (KonIQ's c1..c5 normalised), where the dataset gives them.
    distribution: tuple[float, ...] | None = None
    # KonIQ's `MOS_zscore` (0-100, from per-rater z-scores): VIPNet's label. Not a monotonic map of the
    # 1-5 MOS (SRCC 0.992 between them), so it is kept beside `score`, not derived from it. NaN: none.
    mos_zscore: float = math.nan
    flags: int = 0  # TRAINING_IMAGE, ...
    # A distorted image's reference file (full-reference datasets that ship it); None: not known.
    reference_path: Path | None = None


class Parser(Protocol):
    """`parse(root, on_missing=None)`: None raises on a listed image that is missing; a callable is
    given the image's relative name and the row is skipped (`--skip-bad`)."""

    def __call__(self, root: Path, *, on_missing: Callable[[str], None] | None = None) -> list[Record]: ...


# The score_type of `iqa prepare distorted` caches: distortion levels 1-5, no subjective quality.
LEVEL_SCORES = "level"


@dataclass(frozen=True)
class DatasetSpec:
    """Facts about one dataset: how to parse it and how to describe its scores."""

    name: str
    title: str
    parse: Parser
    score_type: str  # 'MOS' | 'DMOS' | 'Elo'
    native_range: tuple[float, float]
    lower_better: bool
    default_resize: str  # 'none' | 'WxH' | 'short:S'; see iqa_cli.data.resize
    reference_disjoint: bool = False  # splits keep all images of a reference on one side
    expects: tuple[str, ...] = field(default_factory=tuple)  # files/folders a user must provide
    aliases: tuple[str, ...] = field(default_factory=tuple)
    # Scores outside these bounds are an error at prepare time (`--allow-out-of-range` keeps them);
    # None: the declared native_range. Wider where real data exceed the nominal scale (LIVE's DMOS).
    valid_range: tuple[float, float] | None = None
    # The longer side of the full-size images where a smaller official release exists too (KonIQ-10k:
    # 1024, beside the 512x384 one): a cache of the smaller release holds reduced images.
    full_side: int | None = None

    @property
    def score_bounds(self) -> tuple[float, float]:
        return self.valid_range if self.valid_range is not None else self.native_range
