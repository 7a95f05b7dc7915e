"""`iqa train <method>`: one command per training recipe, its options built from the recipe.

Every engine setting and every hyper-parameter of the recipe's protocol is a flag (`--lr-phases`,
`--batch-size`, ...) generated from the dataclass fields, so a new recipe gets its command for free.
Flags left out are None here, which is how the core knows what was given explicitly (for the
precedence defaults < --config < flags, and for --resume).
"""

from __future__ import annotations

import inspect
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from iqa_cli.cli.console import ConsoleProgress, err, out, print_json, write_stdout
from iqa_cli.cli.metric_cells import (
    copies_note,
    fallback_note,
    marked_cell,
    row_cells,
    step_limit_note,
    summary_cells,
    sweep_fallback_note,
    unmeasured_note,
)
from iqa_cli.train.config import EngineConfig, choices_of, field_types
from iqa_cli.train.recipes import get_recipe, recipe_names

app = typer.Typer(
    rich_markup_mode=None,
    help="Train a method on a prepared dataset (the paper's protocol by default).",
    no_args_is_help=True,
)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option_type(tp: Any) -> Any:
    args = typing.get_args(tp)
    inner = next((a for a in args if a is not type(None)), tp) if args and type(None) in args else tp
    if inner in (bool, int, float, str, Path):
        return inner
    choices = choices_of(inner)
    if choices is not None:  # Literal[...]: the core checks the value and names the choices
        return type(choices[0])
    return str  # tuples and other structured values are parsed by the core from text


def _default_text(value: Any) -> str:
    if isinstance(value, tuple):
        if value and isinstance(value[0], tuple):
            return ",".join(":".join(f"{x:g}" if isinstance(x, float) else str(x) for x in pair) for pair in value)
        return ",".join(str(v) for v in value)
    return "none" if value is None else str(value)


def _completer(choices: tuple[Any, ...]) -> Callable[[str], list[str]]:
    """Shell completion of a choice option: the choices that start with what was typed."""

    def complete(incomplete: str) -> list[str]:
        return [str(c) for c in choices if str(c).startswith(incomplete)]

    return complete


def dataclass_options(
    cls: type,
    defaults: Any,
    only: Sequence[str] | None = None,
    *,
    reserved: set[str] | None = None,
    show_defaults: bool = True,
) -> list[inspect.Parameter]:
    """One `Optional[T] = typer.Option(None, ...)` parameter per dataclass field (or per field in `only`);
    a left-out option is None. `metadata["flag"]` gives a switch with no `--no-` form."""
    reserved = RESERVED if reserved is None else reserved
    params = []
    types = field_types(cls)
    for f in fields(cls):
        if only is not None and f.name not in only:
            continue
        if f.name in reserved:
            raise RuntimeError(f"option name '{f.name}' is reserved by the CLI")
        kind = _option_type(types[f.name])
        default_value = getattr(defaults, f.name) if defaults is not None else f.default
        help_text = f.metadata.get("help", "")
        if show_defaults and default_value is not MISSING:
            help_text += f" [default: {_default_text(default_value)}]"
        choices = choices_of(types[f.name])
        completion: dict[str, Any] = {}
        if choices is not None:
            help_text += f" [choices: {'|'.join(str(c) for c in choices)}]"
            completion["autocompletion"] = _completer(choices)
        if "flag" in f.metadata:
            decls = [f.metadata["flag"]]
        elif kind is bool:
            decls = [f"{_flag(f.name)}/--no-{f.name.replace('_', '-')}"]
        else:
            decls = [_flag(f.name)]
        decls += list(f.metadata.get("aliases", ()))  # extra spellings, e.g. IEIT's --from for --from-run
        option = typer.Option(None, *decls, help=help_text, show_default=False, **completion)
        params.append(
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[kind])  # noqa: UP045
        )
    return params


@dataclass
class CommonTrainOptions:
    """The options every `iqa train METHOD` has besides the engine's and the method's own (made into
    flags by `dataclass_options`, like those; `flag` names a switch with no `--no-` form)."""

    data: str | None = field(default=None, metadata={"help": "prepared dataset name (e.g. livew) or cache file"})
    split: str | None = field(
        default=None, metadata={"help": "a split of the cache (default: its first) or 'all' (every split; median)"}
    )
    config: Path | None = field(default=None, metadata={"help": "TOML file of option values (flags override it)"})
    out: Path | None = field(default=None, metadata={"help": "run folder (default: $IQA_HOME/runs/<name>)"})
    name: str | None = field(default=None, metadata={"help": "run name (default: <method>-<dataset>-<time>)"})
    resume: bool = field(
        default=False,
        metadata={
            "help": "continue a stopped run (--name/--out, else the newest unfinished one for --data)",
            "flag": "--resume",
        },
    )
    tiny: bool = field(
        default=False, metadata={"help": "CPU-test-sized network and views (no pretrained weights)", "flag": "--tiny"}
    )
    sweep: str | None = field(
        default=None, metadata={"help": "an option to train at several values (--sweep-values), e.g. borda_weights"}
    )
    sweep_values: str | None = field(
        default=None, metadata={"help": "comma-separated values of --sweep (one value fills a per-round option)"}
    )
    repeats: int | None = field(
        default=None, metadata={"help": "train each setting N times (seeds seed..seed+N-1); report each and the mean"}
    )
    json_output: bool = field(default=False, metadata={"help": "print the results as JSON", "flag": "--json"})
    print_config: bool = field(
        default=False,
        metadata={
            "help": "print the resolved configuration (every option, the data file, device, precision) and exit "
            "without creating a run",
            "flag": "--print-config",
        },
    )


RESERVED = {f.name for f in fields(CommonTrainOptions)}  # no method or engine option may take these names


def _repeats(given: int | None) -> int:
    """--repeats as given (0 is refused by the sweep, not read as "not given"), or 1 when left out."""
    return 1 if given is None else given


def make_train_command(method: str) -> Callable[..., None]:
    recipe = get_recipe(method)
    engine_names = [f.name for f in fields(EngineConfig)]
    param_names = [f.name for f in fields(recipe.Params)]
    parameters = (
        dataclass_options(CommonTrainOptions, CommonTrainOptions(), reserved=set(), show_defaults=False)
        + dataclass_options(EngineConfig, EngineConfig())
        + dataclass_options(recipe.Params, recipe.Params())
    )

    def command(**kwargs: Any) -> None:
        from iqa_cli.train.distributed import env_world
        from iqa_cli.train.engine import TrainingInterrupted
        from iqa_cli.train.trainer import TrainOptions, train

        # Every rank of a torchrun job stops at the same step: rank 0 alone says so, one line in the log.
        says_stops = env_world()[0] == 0

        overrides = {k: kwargs[k] for k in engine_names + param_names if kwargs.get(k) is not None}
        options = TrainOptions(
            method=method,
            data=kwargs["data"],
            split=kwargs["split"],
            config_file=kwargs["config"],
            overrides=overrides,
            tiny=kwargs["tiny"] or None,
            out=kwargs["out"],
            name=kwargs["name"],
            resume=bool(kwargs["resume"]),
        )
        sweeping = kwargs["sweep"] is not None or kwargs["sweep_values"] is not None or kwargs["repeats"] is not None
        if kwargs["print_config"] and sweeping:  # it printed one run's plan, ignoring the sweep and its values
            from iqa_cli.train.sweep import planned_sweep

            planned = planned_sweep(options, kwargs["sweep"], kwargs["sweep_values"], _repeats(kwargs["repeats"]))
            if kwargs["json_output"]:
                print_json(planned)
                return
            show_sweep_plan(planned)
            return
        if kwargs["print_config"]:
            from iqa_cli.train.config import config_text
            from iqa_cli.train.trainer import planned_config

            plan = planned_config(options)
            if kwargs["json_output"]:
                print_json(plan)
                return
            header = (
                f"iqa train {method}: data {plan['data']}, {_splits_text(plan['splits'])}, device "
                f"{plan['device']}, precision train {plan['precision']['train']} / eval {plan['precision']['eval']}"
                + (f", resuming {plan['run']}" if plan["run"] else "")
            )
            on_data = plan.get("on_data")
            if on_data:  # what the cache makes of the options (labels, per-dataset choices)
                resolved = ", ".join(f"{key} = {value}" for key, value in on_data["params"].items())
                header += f"\n# on this data: labels {on_data['labels']}" + (f"; {resolved}" if resolved else "")
            write_stdout(config_text(plan["sections"], header))
            return
        if sweeping:
            from iqa_cli.train.sweep import run_sweep

            try:
                table = run_sweep(
                    options,
                    kwargs["sweep"],
                    kwargs["sweep_values"],
                    _repeats(kwargs["repeats"]),
                    ConsoleProgress(bar_lines=False),
                )
            except TrainingInterrupted as exc:  # a sweep continues by itself when run again
                if says_stops:
                    err.print(f"{method} sweep: {exc}; continue with the same command", markup=False, highlight=False)
                raise typer.Exit(exc.exit_code) from None
            if table is None:  # another rank of a DDP job: rank 0 reports
                return
            if kwargs["json_output"]:
                print_json(table)
            else:
                show_sweep(table)
            return
        try:
            report = train(options, ConsoleProgress(bar_lines=False))
        except TrainingInterrupted as exc:
            # The run folder holds run.json; a multi-step recipe's checkpoints sit deeper than split-<K>/.
            runs = [p for p in exc.checkpoint.parents if (p / "run.json").is_file()] if exc.checkpoint else []
            root = runs[0] if runs else exc.checkpoint.parent.parent if exc.checkpoint else exc.run
            hint = f"; continue with `iqa train {method} --resume --out {root}`"
            if says_stops:
                err.print(f"{method}: {exc}" + (hint if root else ""), markup=False, highlight=False)
            raise typer.Exit(exc.exit_code) from None
        if report is None:  # not rank 0 of a DDP job
            return
        if kwargs["json_output"]:
            print_json(report)
        else:
            show_train_report(report)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = (
        f"Train {recipe.title} with its published protocol as defaults.\n\n"
        "The kept model is chosen on a validation part of the training split (never on test) unless "
        "--select-on test. Runs under torchrun for multi-GPU/multi-node DDP. SIGTERM/SIGUSR1 save a "
        "resumable state; continue with --resume."
    )
    command.__name__ = f"train_{method}"
    return command


def _splits_text(splits: list[str] | None) -> str:
    if not splits:
        return "split -"
    return f"split {splits[0]}" if len(splits) == 1 else f"splits {', '.join(splits)}"


def show_train_report(report: dict[str, Any]) -> None:
    if report["splits"] and all(row["n"] == 0 for row in report["splits"]):
        out.print(f"{report['method']} on {report['dataset']}: every image trained (whole-dataset rounds), none tested")
        _show_watch(report)
        _show_where(report)
        return
    selection = report["selection"]
    title = f"{report['method']} on {report['dataset']}: test metrics of the kept model (selected on the {selection})"
    table = Table(title=title)
    columns = report.get("columns") or ["srcc", "plcc", "plcc_logistic", "krcc", "rmse"]
    combined = "runs" in report  # `iqa runs combine`: each split's row names its run
    for column in ("split", *(["run"] if combined else []), "n", *columns, "best epoch", "epochs"):
        table.add_column(column, justify="right")
    for row in report["splits"]:
        table.add_row(
            str(row["split"]),
            *([str(row.get("run"))] if combined else []),
            str(row["n"]),
            *row_cells(row, columns),
            str(row["best_epoch"]),
            str(row["epochs"]),
        )
    rows = report["splits"]
    blank = ["", ""] if combined else [""]
    if len(rows) > 1:
        table.add_row("median", *blank, *summary_cells(rows, report["median"], columns), "", "")
        mean, std = report.get("mean") or {}, report.get("std") or {}
        if mean:
            table.add_row("mean ± std", *blank, *summary_cells(rows, mean, columns, std), "", "")
    out.print(table)
    for note in (
        fallback_note(rows, columns),
        unmeasured_note(rows, columns),
        copies_note(rows),
        step_limit_note(rows),
    ):
        if note:
            out.print(note, markup=False, highlight=False)
    _show_watch(report)
    _show_where(report)


def _show_where(report: dict[str, Any]) -> None:
    if "runs" in report:  # `iqa runs combine`
        out.print(f"runs: {', '.join(report['runs'])}", markup=False, highlight=False)
    else:
        out.print(f"run folder: {report['run']}", markup=False, highlight=False)


def show_sweep_plan(planned: dict[str, Any]) -> None:
    """`--print-config` of a sweep: a line per run, then the first run's options (the others differ only
    in the swept option and the seed)."""
    from iqa_cli.train.config import config_text

    runs = planned["runs"]
    what = planned["field"] or "repeats"
    lines = [f"iqa train {planned['method']}: sweep of {what}, {len(runs)} run(s) in {planned['sweep']}"]
    for run in runs:
        state = " (kept: continues with its saved options)" if run["kept"] else ""
        lines.append(f"  {what}={run['value']} repeat {run['repeat']} seed {run['seed']}: {run['run']}{state}")
    first = runs[0]["plan"]
    header = (
        "\n# ".join(lines) + f"\n# the first run's options (data {first['data']}, {_splits_text(first['splits'])}, "
        f"device {first['device']}):"
    )
    write_stdout(config_text(first["sections"], header))


def show_sweep(table: dict[str, Any]) -> None:
    columns = table["columns"]
    what = table["field"] or "setting"
    title = f"{table['method']} on {table['dataset']}: each run (median over its splits)"
    if any(row.get("selected_on") == "test" for row in table["runs"]):
        # Each value then scores its best epoch on the test part: choosing a value by it is doubly optimistic.
        title += "; kept models chosen on the test part (--select-on test): optimistic"
    runs = Table(title=title)
    for column in (what, "repeat", "seed", *columns):
        runs.add_column(column, justify="right")
    for row in table["runs"]:
        fell_back = bool(row.get("logistic_fallbacks"))
        cells = [marked_cell(f"{row[c]:.4f}", c, fell_back) if row.get(c) is not None else "nan" for c in columns]
        runs.add_row(str(row["value"]), str(row["repeat"]), str(row["seed"]), *cells)
    out.print(runs)
    if table["repeats"] > 1:  # with one repeat each mean is the row above, and no spread is measured
        means = Table(title=f"mean ± std over the {table['repeats']} repeat(s) of each value")
        for column in (what, "runs", *columns):
            means.add_column(column, justify="right")
        for row in table["by_value"]:
            fell_back = bool(row.get("logistic_fallbacks"))
            cells = [marked_cell(f"{row[f'mean_{c}']:.4f} ± {row[f'std_{c}']:.4f}", c, fell_back) for c in columns]
            means.add_row(str(row["value"]), str(row["runs"]), *cells)
        out.print(means)
    for note in (sweep_fallback_note(table["runs"], columns), step_limit_note(table["runs"], sweep_of=what)):
        if note:
            out.print(note, markup=False, highlight=False)
    out.print(f"sweep folder: {table['sweep']}", markup=False, highlight=False)


def _show_watch(report: dict[str, Any]) -> None:
    watch = report.get("watch") or {}
    if watch:
        cross = Table(title="watched datasets: median over the splits (rounds)")
        for column in ("dataset", "rounds", "last-epoch srcc", "last-epoch plcc", "max |srcc|*", "max |plcc|*"):
            cross.add_column(column, justify="right")
        for name, row in watch.items():
            values = [row[k] for k in ("last_srcc", "last_plcc", "max_abs_srcc", "max_abs_plcc")]
            cross.add_row(name, str(row["rounds"]), *[f"{v:.4f}" for v in values])
        out.print(cross)
        note = next(iter(watch.values()))["max_abs_note"]
        out.print(f"* {note}", markup=False, highlight=False)


def _register() -> None:
    for method in recipe_names():
        app.command(method)(make_train_command(method))


_register()

if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
