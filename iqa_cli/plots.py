"""Figures for results: prediction scatter with the fitted logistic, per-type bars, training curves,
score histograms and the cross-dataset matrix. matplotlib with the Agg backend (no display needed);
PNG or SVG by the file's suffix; every file is written atomically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from iqa_cli.atomic import PNG, TEXT, atomic_path, check_output_file
from iqa_cli.errors import ConfigError

FORMATS = (".png", ".svg")
DPI = 100


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def check_plot_path(path: str | Path) -> Path:
    path = Path(path).expanduser()
    if path.suffix.lower() not in FORMATS:
        raise ConfigError(f"--plot: {path.name} must end in .png or .svg")
    return check_output_file(path, "--plot", kind=PNG if path.suffix.lower() == ".png" else TEXT)


def _save(fig: Any, path: Path) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lower().lstrip("."), dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) and math.isfinite(value) else "n/a"


def scatter(path: str | Path, panels: Sequence[dict[str, Any]], *, xlabel: str, ylabel: str) -> Path:
    """One panel per split: predictions (x) against ground truth (y), the fitted 4-parameter logistic,
    SRCC / PLCC / KRCC in the title. Each panel: {'title', 'pred', 'label', 'srcc', 'plcc', 'krcc'}."""
    from iqa_cli.train.metrics import fit_logistic, logistic4

    path = check_plot_path(path)
    plt = _pyplot()
    count = max(1, len(panels))
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.0 * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels, strict=False):
        pred = np.asarray(panel["pred"], dtype=np.float64)
        label = np.asarray(panel["label"], dtype=np.float64)
        ax.scatter(pred, label, s=8, alpha=0.6, color="tab:blue", edgecolors="none")
        fit = fit_logistic(pred, label)
        if fit.ok and pred.size:
            xs = np.linspace(pred.min(), pred.max(), 200)
            ax.plot(xs, logistic4(xs, *fit.params), color="tab:red", linewidth=1.5, label="logistic fit")
            ax.legend(loc="lower right", fontsize=8)
        ax.set_title(
            f"{panel['title']}\nSRCC {_fmt(panel.get('srcc'))}  PLCC {_fmt(panel.get('plcc'))}  "
            f"KRCC {_fmt(panel.get('krcc'))}",
            fontsize=9,
        )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _finite(value: object) -> float:
    """A metric as a bar height: NaN (no bar) where it was not measured (null or NaN)."""
    from iqa_cli.train.metrics import is_measured

    return float(value) if is_measured(value) else math.nan


def by_type_bars(path: str | Path, by_type: dict[str, dict[str, Any]], *, title: str) -> Path:
    """SRCC and PLCC per distortion type."""
    path = check_plot_path(path)
    plt = _pyplot()
    names = list(by_type)
    x = np.arange(len(names))
    # A type with no correlation (too few images) gets no bar and says so: a bar at 0 would read as SRCC 0.
    srcc = [_finite(by_type[n].get("srcc")) for n in names]
    plcc = [_finite(by_type[n].get("plcc")) for n in names]
    labels = [
        name if math.isfinite(s) or math.isfinite(p) else f"{name} (n={by_type[name].get('n')}: none)"
        for name, s, p in zip(names, srcc, plcc, strict=True)
    ]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(names) + 2), 4.0))
    ax.bar(x - 0.2, srcc, width=0.4, label="SRCC")
    ax.bar(x + 0.2, plcc, width=0.4, label="PLCC")
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(min([0.0] + [v for v in srcc + plcc if math.isfinite(v)]) - 0.05, 1.0)
    ax.set_title(title, fontsize=10)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def training_curves(path: str | Path, records: Sequence[dict[str, Any]], *, metrics: Sequence[str], title: str) -> Path:
    """Loss (train) and the first metrics of the validation and test parts over epochs, from log.jsonl."""
    path = check_plot_path(path)
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    train = [
        r for r in records if r.get("part") in ("train", "val", "test") and "loss" in r and r.get("epoch", -1) >= 0
    ]
    epochs = sorted({int(r["epoch"]) for r in train})
    losses = {int(r["epoch"]): r["loss"] for r in train}
    left.plot(epochs, [losses[e] for e in epochs], marker=".", label="training loss")
    left.set_xlabel("epoch")
    left.set_ylabel("loss")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    for part, style in (("val", "-"), ("test", "--")):
        rows = [r for r in records if r.get("part") == part and r.get("epoch", -1) >= 0]
        for metric in metrics:
            points = [(int(r["epoch"]), r[metric]) for r in rows if isinstance(r.get(metric), (int, float))]
            if points:
                xs, ys = zip(*points, strict=True)
                right.plot(xs, ys, style, marker=".", label=f"{part} {metric}")
    right.set_xlabel("epoch")
    right.set_ylabel("metric")
    right.grid(alpha=0.3)
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def histogram(path: str | Path, scores: np.ndarray, *, title: str, xlabel: str) -> Path:
    path = check_plot_path(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    values = np.asarray(scores, dtype=np.float64)
    values = values[np.isfinite(values)]
    ax.hist(values, bins=min(50, max(5, int(np.sqrt(max(values.size, 1))))), color="tab:blue", alpha=0.8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def matrix_heatmap(
    path: str | Path,
    rows: Sequence[str],
    cols: Sequence[str],
    values: np.ndarray,
    *,
    title: str,
    marks: Sequence[Sequence[str]] | None = None,
) -> Path:
    """Train (rows) x test (columns) heatmap with the values written in the cells (NaN cells blank), each
    followed by its `marks` (footnote signs the title explains)."""
    path = check_plot_path(path)
    plt = _pyplot()
    values = np.asarray(values, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 2.5, 1.0 * len(rows) + 1.8))
    shown = np.ma.masked_invalid(values)
    image = ax.imshow(shown, cmap="viridis", vmin=np.nanmin(values) if np.isfinite(values).any() else 0, vmax=1.0)
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(values[i, j]):
                mark = marks[i][j] if marks is not None else ""
                ax.text(j, i, f"{values[i, j]:.3f}{mark}", ha="center", va="center", color="white", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
