"""What AL-IQA's three prompt heads are measured by (numpy only: the recipe imports it at option-parsing time)."""

from __future__ import annotations

from typing import Any

import numpy as np

from iqa_cli.train.metrics import compute_metrics, pearson, spearman

SCORE_HEAD = 2  # the head whose probability, as 1 + 4p, is the reported score


def head_metrics(heads: np.ndarray, labels: np.ndarray, score_head: int = SCORE_HEAD) -> dict[str, Any]:
    """Metrics of the scoring head (as 1 + 4p) plus the authors' selection metric over all heads."""
    metrics = compute_metrics(1.0 + 4.0 * heads[:, score_head], labels).as_dict()
    plcc = [pearson(heads[:, k], labels) for k in range(heads.shape[1])]
    srcc = [spearman(heads[:, k], labels) for k in range(heads.shape[1])]
    heads_plcc, heads_srcc = float(np.mean(plcc)), float(np.mean(srcc))
    metrics.update(heads_plcc=heads_plcc, heads_srcc=heads_srcc, heads_plcc_srcc=heads_plcc + heads_srcc)
    return metrics
