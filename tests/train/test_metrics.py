"""Metrics: equal to scipy's on known vectors; the logistic mapping on hand-checked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from iqa_cli.train.metrics import MIN_CORRELATION_IMAGES, compute_metrics, fit_logistic, logistic4, median_metrics


def test_equal_to_scipy_with_ties():
    rng = np.random.default_rng(3)
    label = np.round(rng.uniform(1, 5, 200), 1)  # rounding makes ties
    pred = np.round(label + rng.normal(0, 0.7, 200), 1)
    m = compute_metrics(pred, label)
    assert m.n == 200
    assert m.srcc == pytest.approx(stats.spearmanr(pred, label).statistic, abs=1e-12)
    assert m.plcc == pytest.approx(stats.pearsonr(pred, label).statistic, abs=1e-12)
    assert m.krcc == pytest.approx(stats.kendalltau(pred, label).statistic, abs=1e-12)
    assert m.rmse == pytest.approx(math.sqrt(np.mean((pred - label) ** 2)), abs=1e-12)


def test_two_images_measure_no_correlation():
    """Any two distinct predictions correlate +-1 with any two distinct labels: that is no measurement."""
    m = compute_metrics(np.array([3.1, 2.0]), np.array([4.0, 1.5]))
    assert m.n == 2 and all(math.isnan(v) for v in (m.srcc, m.plcc, m.plcc_logistic, m.krcc))
    assert m.rmse == pytest.approx(math.sqrt((0.9**2 + 0.5**2) / 2)) and m.logistic_fit == "fallback"
    three = compute_metrics(np.array([1.0, 2, 3]), np.array([1.0, 3, 2]))
    assert MIN_CORRELATION_IMAGES == 3 and three.srcc == pytest.approx(0.5)


def test_step_case_by_hand():
    # x = 1..5, y = 1,1,1,5,5: raw PLCC = 12 / sqrt(10 * 19.2) = sqrt(3)/2; a steep logistic fits the step.
    x = np.array([1.0, 2, 3, 4, 5])
    y = np.array([1.0, 1, 1, 5, 5])
    m = compute_metrics(x, y)
    assert m.plcc == pytest.approx(math.sqrt(3) / 2, abs=1e-12)
    assert m.logistic_fit == "ok"
    assert m.plcc_logistic > 0.999
    assert m.rmse_logistic < 0.05


def test_recovers_a_known_logistic():
    x = np.linspace(-3, 3, 25)
    y = logistic4(x, 4.5, 1.2, 0.4, 0.8)
    fit = fit_logistic(x, y)
    assert fit.ok
    assert fit.params == pytest.approx((4.5, 1.2, 0.4, 0.8), abs=1e-4)
    m = compute_metrics(x, y)
    assert m.plcc < 0.99 and m.plcc_logistic == pytest.approx(1.0, abs=1e-9)


def test_logistic_never_below_raw_and_fallback_on_constant():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 2 * x + rng.normal(size=50)
    m = compute_metrics(x, y)
    assert m.plcc_logistic >= m.plcc
    flat = compute_metrics(np.ones(20), np.arange(20.0))
    assert flat.logistic_fit == "fallback" and math.isnan(flat.plcc) and math.isnan(flat.srcc)


def test_median_over_splits_skips_nan():
    rows = [{"srcc": 0.8, "plcc": 0.9}, {"srcc": 0.6, "plcc": math.nan}, {"srcc": 0.7, "plcc": 0.7}]
    med = median_metrics(rows)
    assert med["srcc"] == pytest.approx(0.7) and med["plcc"] == pytest.approx(0.8) and med["splits"] == 3


def test_a_decreasing_logistic_is_not_used():
    # A model whose scores fall as quality rises: the best-fitting logistic is decreasing and would
    # report a positive "PLCC after mapping"; the raw (negative) PLCC is reported instead.
    x = np.linspace(-3, 3, 25)
    y = logistic4(-x, 4.5, 1.2, 0.4, 0.8)
    assert not fit_logistic(x, y).ok
    m = compute_metrics(x, y)
    assert m.logistic_fit == "fallback" and m.plcc < -0.9 and m.plcc_logistic == m.plcc


def test_a_summary_over_fewer_splits_than_were_run_is_a_problem():
    from iqa_cli.train.metrics import unmeasured_splits, unmeasured_summary_problem

    rows = [{"split": "a", "srcc": 0.5}, {"split": "b", "srcc": float("nan")}, {"split": "c", "srcc": None}]
    assert unmeasured_splits(rows, "srcc") == ["b", "c"]
    assert unmeasured_summary_problem(rows, "srcc") == (
        "2 of 3 splits gave no finite srcc (b, c; constant predictions or too few test images): a median over the "
        "other 1 would stand for all 3"
    )
    assert unmeasured_summary_problem(rows[:1], "srcc") is None  # every split measured
    assert unmeasured_summary_problem(rows[1:], "srcc").startswith("no split gave a finite srcc (b, c)")


def test_metrics_read_back_as_null_count_as_unmeasured():
    from iqa_cli.train.metrics import median_metrics, summary_metrics

    rows = [{"split": "a", "srcc": 0.5}, {"split": "b", "srcc": None}]  # null: from a strict JSON file
    assert summary_metrics(rows, ("srcc",))["median"]["srcc"] == 0.5
    assert median_metrics(rows, ("srcc",))["srcc"] == 0.5
