"""`iqa runs list|show|combine|rm`: find, inspect, join and remove training runs."""

from __future__ import annotations

from typing import Any, Optional

import typer

from iqa_cli.cli.console import err, out, print_json, write_stdout
from iqa_cli.cli.metric_cells import OPTIMISTIC_MARK

app = typer.Typer(rich_markup_mode=None, help="Training runs: list, show, combine, remove.", no_args_is_help=True)


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "-"


def _headline(metrics: dict[str, Any]) -> str:
    """A result's two headline figures: SRCC and PLCC, or a classifier's accuracies (VIPNet's DPM)."""
    if "srcc" not in metrics and "accuracy" in metrics:
        return f"accuracy {_number(metrics.get('accuracy'))} type_accuracy {_number(metrics.get('type_accuracy'))}"
    return f"srcc {_number(metrics.get('srcc'))} plcc {_number(metrics.get('plcc'))}"


def _duration(seconds: object) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _no_runs_line(method: str | None, data: str | None, every: list[tuple[Any, dict[str, Any]]]) -> str:
    """`no runs in DIR`, or, when filters left out every run there, what the runs there are of (a misspelt
    --data reads otherwise as an empty runs folder)."""
    from collections import Counter

    from iqa_cli.home import runs_dir

    if not every or (method is None and data is None):
        return f"no runs in {runs_dir()}"
    asked = " and ".join(f"{flag} {value}" for flag, value in (("--method", method), ("--data", data)) if value)
    kinds = Counter(f"{info.get('method')} on {info.get('dataset')}" for _, info in every)
    shown = ", ".join(f"{kind} ({count})" for kind, count in kinds.most_common(5)) + (", ..." if len(kinds) > 5 else "")
    return f"no runs match {asked} in {runs_dir()}; the {len(every)} run(s) there are: {shown}"


@app.command("list")
def list_command(
    method: Optional[str] = typer.Option(None, "--method", help="only runs of this method"),  # noqa: UP045
    data: Optional[str] = typer.Option(None, "--data", help="only runs trained on this dataset (name or cache)"),  # noqa: UP045
    json_output: bool = typer.Option(False, "--json", help="print one JSON list"),
) -> None:
    """Runs, newest first: name, method, dataset, splits done, status, median SRCC/PLCC, start, duration."""
    from iqa_cli.train.recipes import get_recipe
    from iqa_cli.train.runs import list_runs, run_summary

    rows = [run_summary(path, info) for path, info in list_runs(method, data)]
    if not rows and method is not None:
        get_recipe(method)  # a misspelt --method is an error, not "no runs" (runs of a removed plugin still list)
    if json_output:
        print_json(rows)
        return
    if not rows:
        err.print(_no_runs_line(method, data, list_runs()), markup=False, highlight=False)
        return
    header = ("NAME", "METHOD", "DATASET", "SPLITS", "STATUS", "SRCC", "PLCC", "STARTED", "DURATION")
    lines = [header] + [
        (
            r["name"],
            str(r["method"]),
            str(r["dataset"]),
            f"{r['splits_done']}/{r['splits']}",
            str(r["status"]),
            (_number(r["srcc"]) if r.get("accuracy") is None else f"acc {_number(r['accuracy'])}") + _optimistic(r),
            _number(r["plcc"]) + _optimistic(r),
            str(r["started"] or "-")[:19],
            _duration(r["duration_s"]),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    write_stdout("".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() + "\n"
                             for line in lines))  # fmt: skip
    if any(_optimistic(r) for r in rows):
        write_stdout(
            f"{OPTIMISTIC_MARK} kept model chosen on the test part itself (--select-on test, the paper habit): "
            "optimistic\n"
        )


def _optimistic(row: dict[str, Any]) -> str:
    """The mark of a run whose reported numbers come from the epoch that scored best on its test part."""
    return OPTIMISTIC_MARK if row.get("selected_on") == "test" and row.get("srcc") is not None else ""


@app.command("show")
def show_command(
    run: str = typer.Argument(..., help="run name (in the runs folder) or run folder"),
    json_output: bool = typer.Option(False, "--json", help="print run.json as one JSON document"),
) -> None:
    """A run's record: configuration, data, splits and their status, results, versions."""
    from iqa_cli.train.runs import cut_by_step_limit, effective_status, find_run, read_run

    root = find_run(run)
    info = read_run(root)
    info["status"] = effective_status(info)
    if json_output:
        print_json({"path": str(root), **info})
        return
    lines = [
        ("run", str(root)),
        ("method", str(info.get("method"))),
        ("dataset", f"{info.get('dataset')} ({info.get('cache')})"),
        ("status", str(info["status"])),
        *([("no result", str(info["problem"]))] if info.get("problem") else []),
        ("created", str(info.get("created"))),
        ("selection", str(info.get("selection"))),
    ]
    for split, state in (info.get("splits") or {}).items():
        result = state.get("result") or {} if isinstance(state, dict) else {}
        metrics = f" {_headline(result)}" if result else ""
        status = state.get("status") if isinstance(state, dict) else state
        if cut_by_step_limit(result.get("stopped_because")):
            status = f"{status}, stopped at the {result['stopped_because']} after {result.get('epochs', '?')} epoch(s)"
        lines.append((f"split {split}", f"{status}{metrics}"))
    median = info.get("median") or {}
    if median and not info.get("problem"):
        lines.append(("median", _headline(median)))
    for key in ("command", "versions", "host"):
        if info.get(key):
            lines.append((key, str(info[key])))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        out.print(f"{key.ljust(width)}  {value}", markup=False, highlight=False, soft_wrap=True)


@app.command("combine")
def combine_command(
    runs: list[str] = typer.Argument(..., help="two or more run names or folders"),
    json_output: bool = typer.Option(False, "--json", help="print the combined report as one JSON document"),
) -> None:
    """One report from runs that each trained some splits of one protocol (a job array: one split per job).

    Refused unless they are of one method, on one dataset, with the same options, finished, and no split
    is in two of them."""
    from iqa_cli.cli.train import show_train_report
    from iqa_cli.train.combine import combine_runs

    report = combine_runs(runs)
    if json_output:
        print_json(report)
        return
    show_train_report(report)


@app.command("rm")
def rm_command(run: str = typer.Argument(..., help="run name (in the runs folder) or run folder")) -> None:
    """Delete a run folder (refused while a job is using it)."""
    from iqa_cli.train.runs import remove_run

    root = remove_run(run)
    err.print(f"removed {root}", markup=False, highlight=False)
