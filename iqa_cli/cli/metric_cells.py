"""Metric cells of the result tables, with the logistic columns marked where no logistic fit was used.

A row whose `logistic_fit` is "fallback" reports its raw PLCC/RMSE under `plcc_logistic` and
`rmse_logistic` (`iqa_cli.train.metrics`); a table must not pass those off as fitted values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from iqa_cli.train.metrics import LOGISTIC_METRICS, is_measured, logistic_fallbacks
from iqa_cli.train.runs import cut_by_step_limit

FALLBACK_MARK = "†"
# A figure whose kept model was chosen on the test part itself (`--select-on test`): optimistic.
OPTIMISTIC_MARK = "§"
_WHY = "(it failed, or fitted worse than the raw predictions)"


def _mark(column: str, marked: bool) -> str:
    return FALLBACK_MARK if marked and column in LOGISTIC_METRICS else ""


def marked_cell(text: str, column: str, marked: bool) -> str:
    """`text` with the mark when `column` is a logistic one and its value includes a fallback."""
    return text + _mark(column, marked)


def metric_cell(value: Any, digits: int = 4) -> str:
    # None (unmeasured, as read from a JSON file) or NaN: "-", explained by `unmeasured_note`; "nan" read as
    # a broken run.
    return f"{value:.{digits}f}" if is_measured(value) else "-"


def row_cells(row: dict[str, Any], columns: Sequence[str], digits: int = 4) -> list[str]:
    """One result row's cells; its logistic columns marked when its fit fell back to the raw values."""
    fell_back = row.get("logistic_fit") == "fallback"
    return [f"{metric_cell(row[c], digits)}{_mark(c, fell_back)}" for c in columns]


def summary_cells(
    rows: Sequence[dict[str, Any]], values: dict[str, Any], columns: Sequence[str], spread: dict[str, Any] | None = None
) -> list[str]:
    """Median (or mean ± std with `spread`) cells over `rows`, marked when any row fell back."""
    marked = logistic_fallbacks(list(rows)) > 0
    if spread is None:
        return [f"{metric_cell(values[c])}{_mark(c, marked)}" for c in columns]
    return [f"{metric_cell(values[c])} ± {metric_cell(spread[c])}{_mark(c, marked)}" for c in columns]


def fallback_note(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str | None:
    """The line under a table that has marked cells, or None."""
    count = logistic_fallbacks(list(rows))
    if not count or not any(c in LOGISTIC_METRICS for c in columns):
        return None
    which = "this split" if len(rows) == 1 else f"{count} of {len(rows)} splits"
    return (
        f"{FALLBACK_MARK} no logistic fit on {which} {_WHY}: "
        "the raw PLCC/RMSE stand under the logistic names there (logistic_fit: fallback in --json)"
        + ("; the summary rows include them" if len(rows) > 1 else "")
    )


def unmeasured_note(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str | None:
    """The line under a table with "-" cells: which columns of which splits were not measured, and why."""
    missing = [c for c in columns if any(not is_measured(r.get(c)) for r in rows)]
    if not missing:
        return None
    splits = sorted({str(r.get("split")) for r in rows if any(not is_measured(r.get(c)) for c in missing)})
    why = "a correlation needs at least 3 images, and distinct predictions"
    low = [c for c in missing if c.startswith("lq_")]
    if low:
        counts = ", ".join(f"{r.get('lq_n', '?')} on {r.get('split')}" for r in rows if str(r.get("split")) in splits)
        why += f"; {', '.join(low)} take only the test images below the low-quality bar: {counts}"
    summary = "; the median, mean and std take the other splits" if 0 < len(splits) < len(rows) else ""
    return f"-: {', '.join(missing)} not measured on split(s) {', '.join(splits)} ({why}){summary}"


def step_limit_note(rows: Sequence[dict[str, Any]], sweep_of: str | None = None) -> str | None:
    """The line under a table whose rows `--max-steps` stopped before the protocol's end: a training
    table's splits, or with `sweep_of` (the swept option) a sweep table's runs."""
    if sweep_of is None:
        cut = [row for row in rows if cut_by_step_limit(row.get("stopped_because"))]
        which = ", ".join(f"{row['split']} after {row.get('epochs', '?')} epoch(s)" for row in cut)
        what = f"split(s) {which}, before the protocol's end: the figures are those of a shortened run"
        detail = " (stopped_because in --json)"
    else:
        cut = [row for row in rows if row.get("cut_by_step_limit")]
        which = ", ".join(f"{sweep_of}={row['value']} repeat {row['repeat']}" for row in cut)
        what = f"{len(cut)} of the {len(rows)} runs before the protocol's end ({which}): their figures are"
        detail = " those of shortened runs"
    return f"note: --max-steps stopped {what}{detail}" if cut else None


def copies_note(rows: Sequence[dict[str, Any]]) -> str | None:
    """The line under a table whose parts held byte-identical copies of training images (scored, or left
    out with --drop-seen), or None."""
    lines = []
    marked = [row for row in rows if row.get("test_copies_of_training")]
    own_split = [row for row in marked if not row.get("includes_training_images")]
    if own_split:
        count = sum(int(row["test_copies_of_training"]) for row in own_split)
        which = ", ".join(str(row["split"]) for row in own_split)
        lines.append(
            f"note: the test part of split(s) {which} held {count} byte-identical copies of training images, and "
            "the figures include them (the split's own; test_copies_of_training in --json)"
        )
    whole = [row for row in marked if row.get("includes_training_images")]
    if whole:
        # --cross onto the model's own training data: these are its training images (or copies of them).
        pairs = [(row["test_copies_of_training"], row.get("n", "?")) for row in whole]
        if len(set(pairs)) == 1:
            counts = f"{pairs[0][0]} of {pairs[0][1]}" + (
                f" (for each of the {len(whole)} models)" if len(whole) > 1 else ""
            )
        else:
            counts = ", ".join(
                f"{row.get('trained_split') or row['split']}: {c} of {n}"
                for row, (c, n) in zip(whole, pairs, strict=True)
            )
        lines.append(
            f"note: of the images scored, {counts} are the training images of the model scoring them, or "
            "byte-identical copies of them, or distortions of them (test_copies_of_training in --json); --drop-seen "
            "leaves them out"
        )
    dropped = [row for row in rows if row.get("seen_copies_dropped")]
    if dropped:
        counts = ", ".join(f"{row['split']}: {row['seen_copies_dropped']}" for row in dropped)
        lines.append(
            f"note: --drop-seen left out byte-identical copies of the models' training files, or distortions of "
            f"them ({counts}); n counts the images scored"
        )
    return "\n".join(lines) or None


def resize_note(rows: Sequence[dict[str, Any]]) -> str | None:
    """The lines under an evaluation whose cache stores the images at another size than the model trained on,
    has other data beside it (IEIT's enhanced images) than it trained with, or left images out."""
    resized = sorted({(str(row["trained_resize"]), str(row["resize"])) for row in rows if row.get("resize")})
    lines = [
        f"note: the model trained on images stored at resize {trained}; this cache stores them at resize {now}, "
        "so these are not the figures of its training-time tests"
        for trained, now in resized
    ]
    changed = sorted({str(row["changed_since_training"]) for row in rows if row.get("changed_since_training")})
    lines += [
        f"note: the model trained with other {what.replace('_', ' ').replace(',', ', ')} than the cache has now "
        "(changed_since_training in --json), so these are not the figures of its training-time tests"
        for what in changed
    ]
    left_out = sorted(
        {(str(row["dataset"]), int(row["left_out_images"])) for row in rows if row.get("left_out_images")}
    )
    lines += [
        f"note: the cache of {name} left out {count} of its images (--skip-bad; left_out_images in --json): these "
        "figures come from the rest"
        for name, count in left_out
    ]
    return "\n".join(lines) or None


def sweep_fallback_note(runs: Sequence[dict[str, Any]], columns: Sequence[str]) -> str | None:
    """The line under a sweep's tables when some of its runs' splits fell back (`logistic_fallbacks`)."""
    count = sum(int(run.get("logistic_fallbacks") or 0) for run in runs)
    if not count or not any(c in LOGISTIC_METRICS for c in columns):
        return None
    return (
        f"{FALLBACK_MARK} these include {count} split(s) with no logistic fit {_WHY}, "
        "where the raw PLCC/RMSE stand under the logistic names"
    )
