"""Correlation metrics for IQA: SRCC, PLCC (raw and after a logistic mapping), KRCC, RMSE.

PLCC after mapping follows the VQEG practice (VQEG FR-TV Phase I final report, 2000) with the
monotonic 4-parameter logistic

    f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2

fitted by least squares (`scipy.optimize.curve_fit`) from the predictions x to the labels y. Start
values: b1 = max(y), b2 = min(y) (the two plateaus), b3 = mean(x) (the midpoint), b4 = std(x) (the
width). The fit runs on x standardised to mean 0 / std 1, which is the same family of curves and
converges far more reliably. When the fit fails, is not finite, or fits worse than the raw values
(possible when the optimiser stalls; the logistic family contains near-linear maps in the limit
b4 -> inf), or is decreasing (b1 <= b2: it would turn a negative correlation into a positive one),
the raw PLCC and RMSE are reported instead and `logistic_fit` says "fallback".

RMSE is measured on the label scale the model was trained on (the 1-5 scale for the esnthere methods).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import TypeGuard

import numpy as np

# scipy is imported inside the functions: the CLI imports this module to build its options.

METRIC_NAMES = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse", "rmse_logistic")
# Where a row's `logistic_fit` is "fallback", these hold the raw PLCC and RMSE (see the docstring).
LOGISTIC_METRICS = ("plcc_logistic", "rmse_logistic")
# Two points are always perfectly (anti-)correlated, whatever the model: a correlation needs three.
MIN_CORRELATION_IMAGES = 3


def _vectors(pred: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(pred, dtype=np.float64).reshape(-1)
    y = np.asarray(label, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise ValueError(f"predictions ({x.size}) and labels ({y.size}) differ in length")
    return x, y


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; nan when either vector is constant or shorter than 2."""
    x, y = _vectors(x, y)
    if x.size < 2:
        return math.nan
    xc, yc = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(xc @ xc) * float(yc @ yc))
    return float(xc @ yc / denom) if denom > 0 else math.nan


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation: Pearson of average ranks (ties share their mean rank), as scipy."""
    from scipy import stats

    x, y = _vectors(x, y)
    return pearson(stats.rankdata(x), stats.rankdata(y))


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (tie-corrected), scipy's O(n log n) implementation."""
    from scipy import stats

    x, y = _vectors(x, y)
    if x.size < 2:
        return math.nan
    return float(stats.kendalltau(x, y).statistic)


def rmse(x: np.ndarray, y: np.ndarray) -> float:
    x, y = _vectors(x, y)
    return float(np.sqrt(np.mean((x - y) ** 2))) if x.size else math.nan


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The VQEG 4-parameter logistic (see the module docstring)."""
    z = np.clip(-(x - b3) / (abs(b4) + 1e-12), -60.0, 60.0)  # clip: exp overflow only, not the curve
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


@dataclass(frozen=True)
class LogisticFit:
    mapped: np.ndarray  # f(x), on the label scale
    params: tuple[float, float, float, float]  # (b1, b2, b3, b4) in the units of the raw predictions
    ok: bool


def load_metric_libraries() -> None:
    """Import scipy's fitting and rank code now, at the start of a command that will score: its BLAS
    reserves its buffers when it loads, and where a virtual memory limit (`ulimit -v`, common on login
    nodes) was reached by then (torch's libraries and threads), that library waited for memory forever
    at 100 % CPU instead of failing."""
    from scipy import optimize, stats  # noqa: F401


def fit_logistic(pred: np.ndarray, label: np.ndarray) -> LogisticFit:
    """Fit the 4-parameter logistic from predictions to labels; `ok=False` means use the raw values."""
    from scipy import optimize

    x, y = _vectors(pred, label)
    failed = LogisticFit(mapped=x, params=(math.nan,) * 4, ok=False)
    if x.size < 5 or not np.isfinite(x).all() or not np.isfinite(y).all() or x.std() == 0 or y.std() == 0:
        return failed
    mean, std = x.mean(), x.std()
    xs = (x - mean) / std
    start = (float(y.max()), float(y.min()), 0.0, 1.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, xs, y, p0=start, maxfev=20000)
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        return failed
    mapped = logistic4(xs, *params)
    if not np.isfinite(mapped).all() or mapped.std() == 0:
        return failed
    if params[0] <= params[1]:  # a decreasing map would report a negatively correlated model as positive
        return failed
    b1, b2, b3, b4 = (float(p) for p in params)
    return LogisticFit(mapped=mapped, params=(b1, b2, b3 * std + mean, abs(b4) * std), ok=True)


@dataclass(frozen=True)
class Metrics:
    n: int
    srcc: float
    plcc: float
    plcc_logistic: float
    krcc: float
    rmse: float
    rmse_logistic: float
    logistic_fit: str  # "ok" | "fallback"

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def compute_metrics(pred: np.ndarray, label: np.ndarray) -> Metrics:
    """All reported metrics for one evaluated set; the correlations are NaN (not measured) on fewer than
    `MIN_CORRELATION_IMAGES` images, where they would be +-1 whatever the predictions."""
    x, y = _vectors(pred, label)
    raw_rmse = rmse(x, y)
    if x.size < MIN_CORRELATION_IMAGES:
        nan = math.nan
        return Metrics(int(x.size), nan, nan, nan, nan, raw_rmse, raw_rmse, logistic_fit="fallback")
    raw_plcc = pearson(x, y)
    fit = fit_logistic(x, y)
    mapped_plcc, mapped_rmse = (pearson(fit.mapped, y), rmse(fit.mapped, y)) if fit.ok else (math.nan, math.nan)
    use_fit = fit.ok and np.isfinite(mapped_plcc) and not (np.isfinite(raw_plcc) and mapped_plcc < raw_plcc)
    return Metrics(
        n=int(x.size),
        srcc=spearman(x, y),
        plcc=raw_plcc,
        plcc_logistic=mapped_plcc if use_fit else raw_plcc,
        krcc=kendall(x, y),
        rmse=raw_rmse,
        rmse_logistic=mapped_rmse if use_fit else raw_rmse,
        logistic_fit="ok" if use_fit else "fallback",
    )


def logistic_fallbacks(rows: list[dict[str, object]]) -> int:
    """How many result rows carry the raw PLCC/RMSE under the logistic names (their fit was not used)."""
    return sum(1 for row in rows if row.get("logistic_fit") == "fallback")


def is_measured(value: object) -> TypeGuard[float]:
    """A metric value that is a finite number (not NaN, and not null as read back from JSON)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def unmeasured_splits(rows: list[dict[str, object]], metric: str) -> list[str]:
    """The splits whose `metric` is not a finite number (constant predictions, too few test images)."""
    return [str(row.get("split")) for row in rows if not is_measured(row.get(metric))]


def unmeasured_summary_problem(rows: list[dict[str, object]], metric: str) -> str | None:
    """Why a summary of `rows` (tested splits) would be no result, or None: no split measured `metric`,
    or only some did, so a median over the others would stand for all of them."""
    missing = unmeasured_splits(rows, metric)
    if not missing:
        return None
    shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
    if len(missing) == len(rows):
        return f"no split gave a finite {metric} ({shown}): constant predictions or too few test images"
    return (
        f"{len(missing)} of {len(rows)} splits gave no finite {metric} ({shown}; constant predictions or too few "
        f"test images): a median over the other {len(rows) - len(missing)} would stand for all {len(rows)}"
    )


def summary_metrics(rows: list[dict[str, float]], names: tuple[str, ...] = METRIC_NAMES) -> dict[str, dict[str, float]]:
    """Median, mean and standard deviation (population, ddof 0) of every metric over splits, ignoring nan.

    The authors report different statistics (VT-IQA and VIPNet scripts the median, the IEIT notebooks
    the mean, SSL-IQA's tools all three), so every multi-split result carries all three."""
    out: dict[str, dict[str, float]] = {"median": {}, "mean": {}, "std": {}}
    for name in names:
        values = np.array([_number(r[name]) for r in rows if name in r], dtype=np.float64)
        values = values[np.isfinite(values)]
        out["median"][name] = float(np.median(values)) if values.size else math.nan
        out["mean"][name] = float(np.mean(values)) if values.size else math.nan
        out["std"][name] = float(np.std(values)) if values.size else math.nan
    for stats in out.values():
        stats["splits"] = len(rows)
    return out


def median_metrics(rows: list[dict[str, float]], names: tuple[str, ...] = METRIC_NAMES) -> dict[str, float]:
    """Median of every metric over splits (the papers' summary), ignoring nan; `splits` counts them."""
    out: dict[str, float] = {}
    for name in names:
        values = np.array([_number(r[name]) for r in rows if name in r], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[name] = float(np.median(values)) if values.size else math.nan
    out["splits"] = len(rows)
    return out


def _number(value: object) -> float:
    """A metric as read back from a strict JSON file: null (not measured) is NaN."""
    return math.nan if value is None else float(value)  # type: ignore[arg-type]
