"""Label scales: native dataset scores <-> the scale a model is trained on.

Caches keep native scores (MOS, DMOS, ...); the mapping is applied at training time and written
into every checkpoint, so predictions can be reported on either scale. All mappings used here are
affine: train = native * scale + offset.

`paper_1to5`: the esnthere code bases (VT-IQA, IEIT, AL-IQA) regress to 1-5 (methods spec §0.2):
KonIQ MOS unchanged, LIVEW and SPAQ `Y/25 + 1`, RBID `Y*0.8 + 1`, CID2013 `(Y+10)/25 + 1`. Every
other dataset uses the generic declared-range mapping onto the same 1-5 scale:
`1 + 4 * (Y - lo) / (hi - lo)` with the cache's `native_range` (lo, hi), reversed
(`1 + 4 * (hi - Y) / (hi - lo)`) when the dataset's `lower_better` is set (DMOS sets), so higher is
always better.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from iqa_cli.data.records import LEVEL_SCORES
from iqa_cli.errors import ConfigError, DataError

# Dataset name (and common aliases) -> (scale, offset) of the esnthere 1-5 mappings.
PAPER_1TO5: dict[str, tuple[float, float, str]] = {
    "koniq10k": (1.0, 0.0, "KonIQ MOS (already 1-5)"),
    "livew": (1 / 25, 1.0, "Y/25 + 1"),
    "spaq": (1 / 25, 1.0, "Y/25 + 1"),
    "rbid": (0.8, 1.0, "Y*0.8 + 1"),
    "cid2013": (1 / 25, 1.0 + 10 / 25, "(Y+10)/25 + 1"),
}
# Where a method's own scripts map a dataset differently from PAPER_1TO5: AL-IQA's test scripts read
# CID2013 as (Y+0)/25 + 1 (test_koniq_rt*.py), VT-IQA's and IEIT's as (Y+10)/25 + 1. Correlations do
# not change (an offset); RMSE and IEIT-style thresholds do.
METHOD_PAPER_1TO5: dict[str, dict[str, tuple[float, float, str]]] = {
    "aliqa": {"cid2013": (1 / 25, 1.0, "(Y+0)/25 + 1, as AL-IQA's test scripts")},
}

# IEIT's low-quality subset, on the training label scale (1-5): label < threshold. 2 everywhere, except
# CID2013 whose (Y+10)/25+1 mapping shifts labels by 0.4: the authors' CID test script uses 2.4 (its
# comment says the bar must move with the +10 offset).
LOW_QUALITY_DEFAULT = 2.0
LOW_QUALITY_THRESHOLDS: dict[str, float] = {"cid2013": 2.4}

ALIASES = {
    "koniq": "koniq10k",
    "koniq-10k": "koniq10k",
    "livec": "livew",
    "clive": "livew",
    "live-itw": "livew",
    "livechallenge": "livew",
    "cid": "cid2013",
}


SCORES_COLUMN = "scores"  # a cache's native scores
ZSCORE_COLUMN = "mos_zscore"  # KonIQ's 0-100 MOS_zscore, kept beside its 1-5 MOS


@dataclass(frozen=True)
class LabelMap:
    scale: float
    offset: float
    description: str
    # The per-image values the map starts from: the cache's native `scores`, or another score column
    # it keeps (`mos_zscore`). "Native" predictions are on that column's scale.
    column: str = SCORES_COLUMN
    # Whether lower training values (so lower predictions) mean better quality: True after `native` on a
    # DMOS dataset. None: not recorded (checkpoints written before iqa kept it).
    lower_better: bool | None = None

    def to_train(self, native: np.ndarray) -> np.ndarray:
        return np.asarray(native, dtype=np.float64) * self.scale + self.offset

    def to_native(self, train: np.ndarray) -> np.ndarray:
        return (np.asarray(train, dtype=np.float64) - self.offset) / self.scale

    def source_scores(self, dataset: Any, source: str) -> np.ndarray:
        """The dataset's values of `column` (float64) that `to_train` maps to labels, all finite, or a
        one-line DataError naming `source`."""
        values = getattr(dataset, self.column, None)
        if values is None:
            raise DataError(f"has no '{self.column}' scores (prepare the dataset again)", path=source)
        scores = np.asarray(values, dtype=np.float64)
        bad = int((~np.isfinite(scores)).sum())
        if bad:
            what = "score" if self.column == SCORES_COLUMN else f"'{self.column}' score"
            raise DataError(f"{bad} images have no finite {what}", path=source)
        return scores

    def same_targets(self, other: LabelMap) -> bool:
        """Whether both give the same training targets from a cache (the descriptions may be worded apart)."""
        return (self.scale, self.offset, self.column) == (other.scale, other.offset, other.column)

    def to_meta(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> LabelMap:
        return cls(
            scale=float(meta["scale"]),
            offset=float(meta["offset"]),
            description=str(meta["description"]),
            column=str(meta.get("column", SCORES_COLUMN)),  # older checkpoints: always the native scores
            lower_better=None if meta.get("lower_better") is None else bool(meta["lower_better"]),
        )

    @property
    def direction(self) -> str:
        """'lower is better', 'higher is better' or 'direction not recorded', of the training values."""
        if self.lower_better is None:
            return "direction not recorded"
        return "lower is better" if self.lower_better else "higher is better"


def recorded_labels(meta: Mapping[str, Any]) -> LabelMap | None:
    """The label mapping a checkpoint's metadata records (a dict, or its JSON text); None when it records none."""
    raw = meta.get("labels")
    if not raw:
        return None
    return LabelMap.from_meta(json.loads(raw) if isinstance(raw, str) else raw)


def directed(label_map: LabelMap, attrs: Mapping[str, Any]) -> LabelMap:
    """`label_map` with the direction of the values it gives on a cache with these attributes: the cache's
    own (`lower_better`), reversed by a negative scale."""
    return replace(label_map, lower_better=bool(attrs.get("lower_better", False)) != (label_map.scale < 0))


def direction_problem(
    model: LabelMap | None, target: LabelMap, model_source: str, target_name: str, *, advice: str
) -> str | None:
    """Why scoring a model whose predictions run one way against labels that run the other would be no
    result (every correlation's sign flipped, and it would read as a model worse than chance), or None
    when both run the same way or a model does not record its direction. `advice` starts the way out
    ('train it', 'score a model trained')."""
    if model is None or model.lower_better is None or target.lower_better is None:
        return None
    if model.lower_better == target.lower_better:
        return None
    return (
        f"{model_source} predicts scores where {model.direction} (its labels: {model.description}), and "
        f"{target_name}'s labels for it are scores where {target.direction} ({target.description}): every "
        f"correlation would have the opposite sign; {advice} with --label-scale paper or range, which make "
        "every dataset's labels higher-is-better"
    )


def check_quality_scores(attrs: Mapping[str, Any], source: str) -> None:
    """Refuse a cache whose scores are no subjective quality (a generated distorted-image set): a
    correlation with its distortion levels would read as a quality result."""
    if attrs.get("score_type") == LEVEL_SCORES:
        raise DataError(
            "is a distorted-image cache: its scores are distortion levels, not quality scores (it pre-trains "
            "VIPNet's DPM, `iqa train vipnet-dpm`); quality methods train and test on subjective scores",
            path=source,
        )


def declared_range_1to5(attrs: Mapping[str, Any]) -> LabelMap:
    """1 + 4 * (Y - lo) / (hi - lo) from the cache's declared native range; reversed for lower-better."""
    try:
        lo, hi = (float(v) for v in attrs["native_range"])
    except (KeyError, TypeError, ValueError):
        name = attrs.get("dataset", "?")
        raise DataError(f"the cache of '{name}' declares no native_range to scale labels") from None
    if not hi > lo:
        raise DataError(f"the cache of '{attrs.get('dataset', '?')}' declares an empty native_range ({lo}, {hi})")
    if bool(attrs.get("lower_better", False)):
        return LabelMap(-4.0 / (hi - lo), 1.0 + 4.0 * hi / (hi - lo), f"1 + 4*({hi:g} - Y)/{hi - lo:g} (lower-better)")
    return LabelMap(4.0 / (hi - lo), 1.0 - 4.0 * lo / (hi - lo), f"1 + 4*(Y - {lo:g})/{hi - lo:g}")


def paper_1to5(attrs: Mapping[str, Any], method: str | None = None) -> LabelMap:
    """The esnthere mapping for their five datasets (`method`'s own where its scripts differ);
    the declared-range mapping otherwise."""
    name = str(attrs.get("dataset", "")).lower()
    name = ALIASES.get(name, name)
    own = METHOD_PAPER_1TO5.get(method or "", {})
    if name in own:
        scale, offset, text = own[name]
        return LabelMap(scale, offset, f"{name}: {text}")
    if name in PAPER_1TO5:
        scale, offset, text = PAPER_1TO5[name]
        return LabelMap(scale, offset, f"{name}: {text}")
    return declared_range_1to5(attrs)


def native(attrs: Mapping[str, Any]) -> LabelMap:
    return LabelMap(1.0, 0.0, "native scores")


LABEL_SCALES = {"paper": paper_1to5, "range": declared_range_1to5, "native": native}


def is_koniq(attrs: Mapping[str, Any]) -> bool:
    """Whether a cache's `dataset` attribute names KonIQ-10k (any of its aliases)."""
    name = str(attrs.get("dataset", "")).lower()
    return ALIASES.get(name, name) == "koniq10k"


def low_quality_threshold(dataset: str | None) -> float:
    """IEIT's low-quality bar for `dataset` on the 1-5 training scale (see LOW_QUALITY_THRESHOLDS)."""
    key = str(dataset or "").lower()
    return LOW_QUALITY_THRESHOLDS.get(ALIASES.get(key, key), LOW_QUALITY_DEFAULT)


def check_label_scale(params: Any) -> None:
    """ConfigError for a `label_scale` no mapping is known for (checked before any work)."""
    scale = getattr(params, "label_scale", None)
    if scale is not None and scale not in LABEL_SCALES:
        raise ConfigError(f"--label-scale: must be one of {', '.join(LABEL_SCALES)}, got '{scale}'")
