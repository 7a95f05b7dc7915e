"""`iqa predict METHOD IMAGE_OR_FOLDER... --weights W`: score the user's own images."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from iqa_cli.cli.checks import not_into_standard_output
from iqa_cli.cli.console import ConsoleProgress, err, out, print_json
from iqa_cli.cli.eval import with_test_options
from iqa_cli.fsnames import printable
from iqa_cli.train.recipes import get_recipe, recipe_names

app = typer.Typer(
    rich_markup_mode=None,
    help="Score your own images (any size) with trained weights: one command per method.",
    no_args_is_help=True,
)


def register(root: typer.Typer) -> None:
    """Add `iqa predict METHOD ...` to the root app."""
    root.add_typer(app, name="predict")


def make_predict_command(method: str) -> Callable[..., None]:
    recipe = get_recipe(method)

    def command(
        inputs: list[Path] = typer.Argument(..., help="image files and/or folders (searched recursively)"),
        weights: Optional[str] = typer.Option(  # noqa: UP045
            None,
            "--weights",
            help="checkpoint file, weights-store name, or run (name or folder); default: the newest finished run "
            "of the method",
        ),
        split: Optional[str] = typer.Option(None, "--split", help="with a run: the split whose kept model scores"),  # noqa: UP045
        variant: Optional[str] = typer.Option(None, "--variant", help="model variant (default: the checkpoint's)"),  # noqa: UP045
        csv_file: Optional[Path] = typer.Option(None, "--csv", help="write the scores to this CSV file"),  # noqa: UP045
        skip_bad: bool = typer.Option(False, "--skip-bad", help="skip unreadable images (listed) instead of stopping"),
        batch_size: int = typer.Option(16, "--batch-size", help="images per forward pass"),
        workers: Optional[int] = typer.Option(  # noqa: UP045
            None,
            "-j",
            "--workers",
            min=1,
            help="decode processes (default: the cores iqa may use, less torch's threads on the CPU; 1 = this process)",
        ),
        device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
        amp: str = typer.Option(
            "auto", "--amp", help="precision: auto (TF32 on GPUs, float32 on CPUs), tf32, off (float32), bf16, fp16"
        ),
        json_output: bool = typer.Option(False, "--json", help="print the scores as JSON"),
        **test_options: Any,
    ) -> None:
        from dataclasses import asdict

        from iqa_cli.api import resolve_weights_arg
        from iqa_cli.atomic import TEXT, atomic_path, check_output_file
        from iqa_cli.train.predict import predict_files
        from iqa_cli.train.weights import newest_finished_run

        if csv_file is not None:
            # before the work, and never over an image or a text file that is not this table
            check_output_file(csv_file, "--csv", kind=TEXT, headers=("path,score,",))
            not_into_standard_output(csv_file, "--csv", json_output=json_output)
        if weights is None:
            weights = str(newest_finished_run(method))
            err.print(f"scoring with the newest finished {method} run: {weights}", markup=False, highlight=False)
        weights = resolve_weights_arg(weights, method, split)
        report = predict_files(
            method,
            weights,
            list(inputs),
            variant=variant,
            skip_bad=skip_bad,
            batch_size=batch_size,
            device=device,
            amp=amp,
            progress=ConsoleProgress(),
            workers=workers,
            test_options={k: v for k, v in test_options.items() if v is not None},
        )
        for _path, reason in report.skipped:
            err.print(f"skipped: {reason}", markup=False, highlight=False)
        # A classifier's predictions say what each class number stands for (same keys in every row).
        detail_names = list(report.predictions[0].details) if report.predictions else []
        if csv_file is not None:
            # a name that is no UTF-8 on disk goes out as its own bytes
            with (
                atomic_path(csv_file) as tmp,
                open(tmp, "w", encoding="utf-8", errors="surrogateescape", newline="") as f,
            ):
                writer = csv.writer(f)
                writer.writerow(["path", "score", "score_native", "width", "height", *detail_names])
                for p in report.predictions:
                    # 9 significant digits: every float32 score exactly (6 tied 100 of 10,000 random scores on
                    # the 1-5 scale, which the JSON tells apart)
                    native = "" if p.score_native is None else f"{p.score_native:.9g}"
                    details = [p.details[name] for name in detail_names]
                    writer.writerow([p.path, f"{p.score:.9g}", native, p.width, p.height, *details])
        if json_output:
            print_json(
                {
                    "method": report.method,
                    "weights": report.weights,
                    "scale": report.scale,
                    "native_scale": report.native_scale,
                    "resize": report.resize,  # the training cache's size the files were resized to first
                    "predictions": [_prediction_row(asdict(p)) for p in report.predictions],
                    "skipped": [{"path": p, "reason": r} for p, r in report.skipped],
                    "notes": report.notes,
                }
            )
            return
        if csv_file is not None and len(report.predictions) > 50:
            out.print(f"{len(report.predictions)} scores written to {escape(str(csv_file))}")
            return
        table = Table(title=f"{method} scores ({report.scale})")
        table.add_column("image", overflow="fold")
        table.add_column("class" if detail_names else "score", justify="right")
        if report.native_scale:
            table.add_column(report.native_scale, justify="right")
        for name in detail_names:
            table.add_column(name.replace("_", " "), justify="right")
        table.add_column("size", justify="right")
        for p in report.predictions:
            row = [escape(printable(p.path)), f"{p.score:.0f}" if detail_names else f"{p.score:.3f}"]
            if report.native_scale:
                row.append(f"{p.score_native:.2f}")
            row += [escape(str(p.details[name])) for name in detail_names]
            table.add_row(*row, f"{p.width}x{p.height}")
        out.print(table)

    with_test_options(command, recipe, files=True)
    if recipe.predicts_classes:
        meaning = (
            f"Each image's number is its {recipe.prediction_scale}; the columns beside it say what it stands for. "
        )
    else:
        meaning = (
            "Scores are on the model's training scale (1-5 for VT-IQA, IEIT, AL-IQA and SSL-IQA; higher is better, "
            "unless the model trained with --label-scale native on a lower-better dataset, which the output says) "
            "and, when the checkpoint records its training dataset's label mapping, also on that dataset's native "
            "scale. "
        )
    command.__doc__ = (
        f"Score images with trained {recipe.title} weights and its test-time protocol.\n\n"
        "Images of any size (JPEG/PNG/BMP/TIFF/WebP; folders are searched recursively) are scored in batches. "
        + meaning
        + "Test-time options (as `iqa eval` takes them) change how the images are scored, not the model."
    )
    return command


def _prediction_row(prediction: dict[str, Any]) -> dict[str, Any]:
    """A prediction as one flat JSON object: its details (a classifier's type and level) beside the score."""
    details = prediction.pop("details")
    return {**prediction, **details}


for _method in recipe_names():
    app.command(_method)(make_predict_command(_method))
