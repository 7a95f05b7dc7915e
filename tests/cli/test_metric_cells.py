"""Result tables mark the logistic columns of a split whose logistic fit was not used."""

from __future__ import annotations

from iqa_cli.cli.console import out
from iqa_cli.cli.eval import show_eval_report
from iqa_cli.cli.metric_cells import FALLBACK_MARK, fallback_note, row_cells, summary_cells
from iqa_cli.cli.train import show_sweep, show_train_report

COLUMNS = ["srcc", "plcc", "plcc_logistic", "krcc", "rmse"]


def _row(split: str, fit: str, plcc: float) -> dict[str, object]:
    return {"split": split, "n": 10, "srcc": 0.5, "plcc": plcc, "plcc_logistic": plcc if fit == "fallback" else 0.9,
            "krcc": 0.4, "rmse": 0.3, "rmse_logistic": 0.2, "logistic_fit": fit}  # fmt: skip


def test_only_the_logistic_cells_of_a_fallback_row_are_marked():
    marked = ["0.5000", "0.6100", f"0.6100{FALLBACK_MARK}", "0.4000", "0.3000"]
    assert row_cells(_row("a", "fallback", 0.61), COLUMNS) == marked
    assert FALLBACK_MARK not in "".join(row_cells(_row("a", "ok", 0.61), COLUMNS))
    unknown = {k: v for k, v in _row("a", "ok", 0.6).items() if k != "logistic_fit"}  # older results files
    assert FALLBACK_MARK not in "".join(row_cells(unknown, COLUMNS))


def test_summaries_are_marked_when_any_split_fell_back_and_the_note_counts_them():
    rows = [_row("a", "ok", 0.6), _row("b", "fallback", 0.7), _row("c", "ok", 0.8)]
    values = {c: 0.5 for c in COLUMNS}
    assert summary_cells(rows, values, COLUMNS)[2] == f"0.5000{FALLBACK_MARK}"
    assert summary_cells(rows, values, COLUMNS, values)[2] == f"0.5000 ± 0.5000{FALLBACK_MARK}"
    assert FALLBACK_MARK not in "".join(summary_cells(rows[:1], values, COLUMNS))
    note = fallback_note(rows, COLUMNS)
    assert note is not None and "1 of 3 splits" in note and "summary rows include them" in note
    assert fallback_note(rows[:1], COLUMNS) is None
    assert fallback_note(rows, ["srcc", "plcc"]) is None  # no logistic column shown: nothing to mark


def test_eval_and_train_tables_show_the_mark_and_the_note():
    rows = [_row("random_0", "fallback", 0.61), _row("random_1", "ok", 0.7)]
    stats = {c: 0.5 for c in COLUMNS}
    report = {"method": "vtiqa", "dataset": "mini", "cross": False, "selection": "kept model", "columns": COLUMNS,
              "results": rows, "median": stats, "mean": stats, "std": stats}  # fmt: skip
    with out.capture() as captured:
        show_eval_report(report)
    text = captured.get()
    assert f"0.6100{FALLBACK_MARK}" in text and "no logistic fit on 1 of 2 splits" in text
    train_rows = [{**row, "best_epoch": 1, "epochs": 2} for row in rows]
    with out.capture() as captured:
        show_train_report({**report, "splits": train_rows, "run": "/tmp/run"})
    text = captured.get()
    assert f"0.6100{FALLBACK_MARK}" in text and "no logistic fit on 1 of 2 splits" in text
    with out.capture() as captured:
        show_eval_report({**report, "results": [_row("random_0", "ok", 0.6)]})
    assert FALLBACK_MARK not in captured.get() and "no logistic fit" not in captured.get()


def test_a_sweep_table_marks_the_runs_and_means_that_include_a_fallback():
    columns = ["srcc", "plcc_logistic"]
    runs = [
        {"value": "a", "repeat": 1, "seed": 0, "srcc": 0.5, "plcc_logistic": 0.61, "logistic_fallbacks": 1},
        {"value": "b", "repeat": 1, "seed": 0, "srcc": 0.5, "plcc_logistic": 0.72, "logistic_fallbacks": 0},
    ]
    means = [
        {"value": v, "runs": 1, "mean_srcc": 0.5, "std_srcc": 0.0, "mean_plcc_logistic": p, "std_plcc_logistic": 0.0,
         "logistic_fallbacks": n}
        for v, p, n in (("a", 0.61, 1), ("b", 0.72, 0))
    ]  # fmt: skip
    table = {"method": "aliqa", "dataset": "mini", "field": "lr", "columns": columns, "runs": runs,
             "by_value": means, "repeats": 2, "sweep": "/tmp/sweep"}  # fmt: skip
    with out.capture() as captured:
        show_sweep(table)
    text = captured.get()
    assert f"0.6100{FALLBACK_MARK}" in text and f"0.6100 ± 0.0000{FALLBACK_MARK}" in text
    assert f"0.7200{FALLBACK_MARK}" not in text and "include 1 split(s) with no logistic fit" in text


def test_a_sweep_of_one_repeat_shows_no_spread_and_says_when_its_models_were_kept_on_test():
    """With one repeat the second table repeated each run as "0.7088 ± nan"; a sweep of `--select-on test`
    runs (each value scored by its best test epoch) looked like any other."""
    runs = [{"value": v, "repeat": 1, "seed": 0, "srcc": s, "selected_on": "test", "logistic_fallbacks": 0}
            for v, s in (("0.01", 0.7), ("0.001", 0.6))]  # fmt: skip
    means = [{"value": r["value"], "runs": 1, "mean_srcc": r["srcc"], "std_srcc": float("nan")} for r in runs]
    table = {"method": "vtiqa", "dataset": "mini", "field": "lr", "columns": ["srcc"], "runs": runs,
             "by_value": means, "repeats": 1, "sweep": "/tmp/sweep"}  # fmt: skip
    with out.capture() as captured:
        show_sweep(table)
    text = " ".join(captured.get().split())
    assert "nan" not in text and "mean ± std" not in text and "0.7000" in text
    assert "kept models chosen on the test part (--select-on test): optimistic" in text


def test_an_unmeasured_cell_is_a_dash_with_a_line_saying_why():
    """IEIT's low-quality columns printed "nan" where no test image fell below the bar, with no word."""
    from iqa_cli.cli.metric_cells import unmeasured_note

    row = {**_row("random_0", "ok", 0.6), "lq_srcc": None, "lq_plcc": float("nan"), "lq_n": 0}
    columns = [*COLUMNS, "lq_srcc", "lq_plcc"]
    assert row_cells(row, columns)[-2:] == ["-", "-"]
    note = unmeasured_note([row], columns)
    assert note is not None and note.startswith("-: lq_srcc, lq_plcc not measured on split(s) random_0")
    assert "below the low-quality bar: 0 on random_0" in note
    assert unmeasured_note([_row("a", "ok", 0.6)], COLUMNS) is None
    # The training table (and `iqa runs combine`'s) printed the "-" cells without the line, and its
    # median over the splits that measured them stood for every split without a word.
    measured = {**_row("random_1", "ok", 0.7), "lq_srcc": 0.4, "lq_plcc": 0.5, "lq_n": 6}
    rows = [{**r, "best_epoch": 1, "epochs": 2} for r in (row, measured)]
    stats = {c: 0.5 for c in columns}
    report = {"method": "ieit", "dataset": "mini", "selection": "kept model", "columns": columns, "splits": rows,
              "median": stats, "mean": stats, "std": stats, "run": "/tmp/run"}  # fmt: skip
    with out.capture() as captured:
        show_train_report(report)
    text = " ".join(captured.get().split())
    assert "-: lq_srcc, lq_plcc not measured on split(s) random_0" in text
    assert "the median, mean and std take the other splits" in text
