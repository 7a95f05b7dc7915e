"""`iqa eval <method>`: metrics of trained weights on a dataset's test split(s) or all of another dataset."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from iqa_cli.cli.checks import not_into_standard_output
from iqa_cli.cli.console import ConsoleProgress, err, out, print_json
from iqa_cli.cli.metric_cells import (
    OPTIMISTIC_MARK,
    copies_note,
    fallback_note,
    metric_cell,
    resize_note,
    row_cells,
    summary_cells,
    unmeasured_note,
)
from iqa_cli.errors import ConfigError
from iqa_cli.train.recipes import get_recipe, recipe_names

app = typer.Typer(
    rich_markup_mode=None,
    help="Evaluate trained weights: SRCC, PLCC (raw and logistic-mapped), KRCC, RMSE.",
    no_args_is_help=True,
)


def make_eval_command(method: str) -> Callable[..., None]:
    recipe = get_recipe(method)

    def command(
        data: Optional[str] = typer.Option(  # noqa: UP045
            None,
            "--data",
            help="dataset (name or cache) to evaluate on; with --cross, the training dataset (finds default weights)",
        ),
        split: Optional[str] = typer.Option(  # noqa: UP045
            None, "--split", help="split K or 'all' (default: the splits the run trained; else the first)"
        ),
        cross: Optional[str] = typer.Option(  # noqa: UP045
            None,
            "--cross",
            help="evaluate on every image of other prepared datasets: a name or cache, a,b,c, or all",
        ),
        matrix: bool = typer.Option(
            False, "--matrix", help="train x test table of the newest run on each --data dataset (--data a,b,c)"
        ),
        plot: Optional[Path] = typer.Option(  # noqa: UP045
            None,
            "--plot",
            help="draw the results (.png or .svg): predictions vs ground truth per split with the fitted "
            "logistic (and per-type bars with --by-type), or the --matrix heatmap",
        ),
        weights: Optional[str] = typer.Option(  # noqa: UP045
            None,
            "--weights",
            help="checkpoint file, weights-store name, run, or runs a,b,c that each trained some splits of one "
            "protocol (a job array) (default: newest local run)",
        ),
        split_file: Optional[Path] = typer.Option(  # noqa: UP045
            None,
            "--split-file",
            help="authors' index file (.mat with ind_train/ind_test, e.g. AL-IQA's koniq_rt25_index.mat): "
            "score its ind_test",
        ),
        variant: Optional[str] = typer.Option(  # noqa: UP045
            None, "--variant", help="model variant (default: the checkpoint's)"
        ),
        json_output: bool = typer.Option(False, "--json", help="print the results as JSON"),
        csv_file: Optional[Path] = typer.Option(None, "--csv", help="write the metrics table to this CSV"),  # noqa: UP045
        per_image: Optional[Path] = typer.Option(  # noqa: UP045
            None, "--per-image", help="write every prediction to this CSV"
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
        amp: str = typer.Option(
            "auto", "--amp", help="precision: auto (TF32 on GPUs, float32 on CPUs), tf32, off (float32), bf16, fp16"
        ),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="evaluation batch size"),  # noqa: UP045
        preload_gb: Optional[float] = typer.Option(  # noqa: UP045
            None,
            "--preload-gb",
            help="GiB of RAM for prepared views [default: 60 % of the available memory, within the job's limit]",
        ),
        by_type: bool = typer.Option(
            False, "--by-type", help="also SRCC/PLCC per distortion type (KADID-10k, TID2013, LIVE, CSIQ)"
        ),
        drop_seen: bool = typer.Option(
            False,
            "--drop-seen",
            help="leave out images that are byte-identical copies of a model's training files, or distortions "
            "of them (counted in the output), instead of refusing the dataset",
        ),
        **overrides: Any,
    ) -> None:
        from iqa_cli.atomic import TEXT, check_output_file
        from iqa_cli.train.evaluate import EvalOptions, evaluate, write_metrics_csv, write_per_image
        from iqa_cli.train.matrix import cross_matrix, dataset_list, evaluate_cross

        if plot is not None:
            from iqa_cli.plots import check_plot_path

            check_plot_path(plot)  # before the work
        tables = {"--csv": ("dataset,split,", "trained on \\ tested on"), "--per-image": ("dataset,split,index,name,",)}
        for option, path in (("--csv", csv_file), ("--per-image", per_image)):
            if path is not None:  # never over a model, a cache, or a text file that is not our table
                check_output_file(path, option, kind=TEXT, headers=tables[option])
        for option, path in (("--csv", csv_file), ("--per-image", per_image), ("--plot", plot)):
            not_into_standard_output(path, option, json_output=json_output)
        if csv_file is not None and per_image is not None and csv_file.resolve() == per_image.resolve():
            raise ConfigError(f"--csv and --per-image both name {csv_file}: the second would overwrite the first")
        options = EvalOptions(
            method=method,
            data=data,
            split=split,
            cross=cross,
            weights=weights,
            variant=variant,
            device=device,
            amp=amp,
            batch_size=batch_size,
            preload_gb=preload_gb,
            by_type=by_type,
            split_file=split_file,
            drop_seen=drop_seen,
            overrides={k: v for k, v in overrides.items() if v is not None},
        )
        if matrix:
            if data is None or cross is not None:
                raise ConfigError("--matrix takes the datasets as --data a,b,c (and no --cross)")
            if per_image is not None:
                raise ConfigError(
                    "--per-image does not apply to --matrix (--cross a,b,c writes one model's predictions)"
                )
            table = cross_matrix(options, dataset_list(data, what="--data"), progress=ConsoleProgress())
            if csv_file is not None:
                table.write_csv(csv_file)
            if plot is not None:
                from iqa_cli.plots import matrix_heatmap

                title = f"{method}: {table.metric.upper()} (median over splits)"
                cell_marks = _matrix_marks(table.cells)
                marks = [[cell_marks.get((a, b), "") for b in table.datasets] for a in table.datasets]
                title += "".join(f"\n{line}" for line in _marks_legend(cell_marks))
                matrix_heatmap(plot, table.datasets, table.datasets, table.values, title=title, marks=marks)
            if json_output:
                print_json(table.as_dict())
            else:
                show_matrix(table.as_dict())
            return
        targets = dataset_list(cross, what="--cross") if cross is not None else []
        if len(targets) > 1:
            reports = evaluate_cross(options, targets, ConsoleProgress())
            if csv_file is not None:
                write_metrics_csv(csv_file, reports)
            if per_image is not None:
                write_per_image(per_image, [row for one in reports for row in one.per_image])
            if json_output:
                print_json([r.as_dict() for r in reports])
            else:
                for one in reports:
                    show_eval_report(one.as_dict())
            if plot is not None:
                _plot_reports(plot, reports)
            return
        options.cross = targets[0] if targets else None
        report = evaluate(options, ConsoleProgress())
        if csv_file is not None:
            write_metrics_csv(csv_file, [report])
        if per_image is not None:
            write_per_image(per_image, report.per_image)
        if plot is not None:
            _plot_reports(plot, [report])
        if json_output:
            print_json(report.as_dict())
        else:
            show_eval_report(report.as_dict())

    with_test_options(command, recipe)
    command.__doc__ = (
        f"Evaluate {recipe.title} with its test-time protocol.\n\n"
        "Intra-dataset: the test part of --split K (or all splits, median). Cross-dataset: --cross D scores "
        "every image of D. Default weights: the newest local run of this method on --data."
    )
    return command


def with_test_options(command: Any, recipe: Any, *, files: bool = False) -> None:
    """Add a flag per test-time parameter the recipe lets a test override (`Recipe.test_options`; with
    `files`, those of scoring image files); their values reach the command as keyword arguments (None
    when not given)."""
    from iqa_cli.cli.train import dataclass_options

    signature = inspect.signature(command)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    extra = dataclass_options(recipe.Params, recipe.Params(), only=recipe.test_options(files=files))
    command.__signature__ = signature.replace(parameters=fixed + extra)


def _plot_reports(plot: Path, reports: list[Any]) -> None:
    """One scatter panel per split (per dataset with several --cross); per-type bars beside it."""
    from iqa_cli.plots import by_type_bars, scatter

    panels = []
    for report in reports:
        for row in report.results:
            rows = [p for p in report.per_image if p["split"] == row["split"] and p["dataset"] == row["dataset"]]
            title = f"{report.method} on {row['dataset']}, {row['split']}"
            panels.append(
                {
                    "title": title,
                    "pred": [p["prediction"] for p in rows],
                    "label": [p["label"] for p in rows],
                    **{m: row.get(m) for m in ("srcc", "plcc", "krcc")},
                }
            )
            if row.get("by_type"):
                bars = plot.with_name(f"{plot.stem}-by-type-{row['dataset']}-{row['split']}{plot.suffix}")
                by_type_bars(bars, row["by_type"], title=f"{title}: per distortion type")
    scatter(plot, panels, xlabel="prediction", ylabel="ground truth (training label scale)")
    err.print(f"plot written to {plot}", markup=False, highlight=False)


MATRIX_MARKS = {
    OPTIMISTIC_MARK: "kept model chosen on its own test part (--select-on test, the paper habit): optimistic",
    "‡": "the model's training images included (two names of one dataset): no cross-dataset result",
}


def show_matrix(matrix: dict[str, Any]) -> None:
    table = Table(title=f"{matrix['method']}: {matrix['metric'].upper()} (rows trained on, columns tested on)")
    table.add_column("trained on \\ tested on")
    for name in matrix["datasets"]:
        table.add_column(name, justify="right")
    marks = _matrix_marks(matrix.get("cells", []))
    for name, row in zip(matrix["datasets"], matrix["matrix"], strict=True):
        shown = []
        for tested, value in zip(matrix["datasets"], row, strict=True):
            shown.append(("-" if value is None else f"{value:.4f}") + marks.get((name, tested), ""))
        table.add_row(name, *shown)
    out.print(table)
    for line in _marks_legend(marks):
        out.print(line, markup=False, highlight=False)


def _matrix_marks(cells: Iterable[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """The marks of each (trained on, tested on) cell: an optimistic kept-model choice, training images in
    the test."""
    marks = {}
    for cell in cells:
        optimistic = cell["kind"] == "intra" and "test" in str(cell.get("selected_on", "")).split(",")
        marks[(cell["trained_on"], cell["tested_on"])] = (OPTIMISTIC_MARK if optimistic else "") + (
            "‡" if cell.get("includes_training_images") else ""
        )
    return marks


def _marks_legend(marks: dict[tuple[str, str], str]) -> list[str]:
    """One line per mark used in `marks`, in MATRIX_MARKS order (the table's footnotes, the plot's title)."""
    used = set("".join(marks.values()))
    return [f"{mark} {meaning}" for mark, meaning in MATRIX_MARKS.items() if mark in used]


def show_eval_report(report: dict[str, Any]) -> None:
    kind = "cross-dataset" if report["cross"] else "test split"
    if any(row.get("includes_training_images") for row in report["results"]):
        kind = "every image, the model's training images included: no cross-dataset result"
    elif any(row.get("own_dataset") for row in report["results"]):
        kind = "the model's own dataset without its training images (--drop-seen): no cross-dataset result"
    elif any(row.get("other_dataset") for row in report["results"]):
        others = sorted({str(row.get("trained_on")) for row in report["results"] if row.get("other_dataset")})
        kind = f"test split; the model trained on {', '.join(others)}, so a cross-dataset result"
    cache = Path(str(report.get("cache") or ""))
    shown = report["dataset"] if cache.stem in ("", report["dataset"]) else f"{report['dataset']} (cache {cache.name})"
    title = f"{report['method']} on {shown} ({kind}); {report['selection']}"
    if report.get("precision") not in (None, "", "float32"):
        title += f"; {report['precision']} evaluation"
    table = Table(title=title)
    columns = report.get("columns") or ["srcc", "plcc", "plcc_logistic", "krcc", "rmse"]
    for column in ("split", "n", *columns, "trained on"):
        table.add_column(column, justify="right")
    for row in report["results"]:
        trained = f"{row.get('trained_on') or '?'}"
        if row.get("trained_split") is not None:
            trained += f" / split {row['trained_split']}"
        table.add_row(str(row["split"]), str(row["n"]), *row_cells(row, columns), trained)
    rows = report["results"]
    if len(rows) > 1:
        table.add_row("median", "", *summary_cells(rows, report["median"], columns), "")
        mean, std = report.get("mean") or {}, report.get("std") or {}
        if mean:
            table.add_row("mean ± std", "", *summary_cells(rows, mean, columns, std), "")
    out.print(table)
    for note in (fallback_note(rows, columns), unmeasured_note(rows, columns), copies_note(rows), resize_note(rows)):
        if note:
            out.print(note, markup=False, highlight=False)
    for row in report["results"]:
        if row.get("by_type"):
            show_by_type(row)


def show_by_type(row: dict[str, Any]) -> None:
    table = Table(title=f"split {row['split']}: per distortion type")
    for column in ("type", "n", "srcc", "plcc"):
        table.add_column(column, justify="left" if column == "type" else "right")
    unmeasured = 0
    for kind, values in row["by_type"].items():
        cells = [metric_cell(values.get(metric)) for metric in ("srcc", "plcc")]
        unmeasured += "-" in cells
        table.add_row(kind, str(values["n"]), *cells)
    out.print(table)
    if unmeasured:
        # NaN read like a broken run; these are types with too few images (or constant predictions on them).
        out.print(
            f"-: no correlation for {unmeasured} type(s): fewer than 3 images of the type in this part, or "
            "constant predictions on them (null in --json)",
            markup=False,
            highlight=False,
        )


for _method in recipe_names():
    app.command(_method)(make_eval_command(_method))
