"""`iqa demo`: build a small real-photo dataset, train a tiny VT-IQA on the CPU, evaluate it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from iqa_cli.cli.console import ConsoleProgress, out, print_json
from iqa_cli.cli.metric_cells import fallback_note, row_cells


def register(root: typer.Typer) -> None:
    """Add `iqa demo` to the root app."""

    @root.command("demo")
    def demo_command(
        photos: Optional[int] = typer.Option(None, "--photos", help="sample photographs to use (3-15) [default: 15]"),  # noqa: UP045
        tiles: Optional[int] = typer.Option(None, "--tiles", help="tiles cut from each photograph [default: 6]"),  # noqa: UP045
        levels: Optional[int] = typer.Option(None, "--levels", help="strengths per distortion [default: 4]"),  # noqa: UP045
        epochs: Optional[int] = typer.Option(None, "--epochs", help="training epoch cap [default: 150]"),  # noqa: UP045
        workdir: Optional[Path] = typer.Option(  # noqa: UP045
            None, "--workdir", help="where the image folder goes [default: $IQA_HOME/demo]"
        ),
        device: str = typer.Option("cpu", "--device", help="cpu (default), auto, cuda"),
        seed: int = typer.Option(0, "--seed", min=0, help="seed of tiles, noise, training"),
        json_output: bool = typer.Option(False, "--json", help="print the report as JSON"),
    ) -> None:
        """Run the whole pipeline on any machine in a few minutes, with no download.

        Tiles of scikit-image's sample photographs are degraded by blur, noise and JPEG at graded
        strengths (score = 5 - 4 * level / levels), written as a custom dataset (folder + scores.csv),
        packed into the cache `demo` (reference-disjoint splits), used to train a tiny VT-IQA on the CPU,
        and evaluated on the held-out test split.
        """
        import dataclasses

        from iqa_cli.train.demo import FULL, run_demo

        size = dataclasses.replace(
            FULL,
            **{
                k: v
                for k, v in {"photos": photos, "tiles_per_photo": tiles, "levels": levels, "epochs": epochs}.items()
                if v is not None
            },
        )
        report = run_demo(size=size, workdir=workdir, device=device, seed=seed, progress=ConsoleProgress())
        if json_output:
            print_json(report.as_dict())
            return
        m = report.metrics
        title = f"demo: tiny VT-IQA on {report.images} images, test split ({m['n']} images, unseen photographs)"
        table = Table(title=title)
        columns = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")
        for column in columns:
            table.add_column(column, justify="right")
        table.add_row(*row_cells(m, columns, digits=3))
        out.print(table)
        note = fallback_note([m], columns)
        if note:
            out.print(note, markup=False, highlight=False)
        s = report.seconds
        out.print(
            f"time: {s['total']:.0f} s (dataset {s['dataset']:.0f}, prepare {s['prepare']:.0f}, "
            f"train {s['train']:.0f}, evaluate {s['evaluate']:.0f})"
        )
        out.print(f"images: {escape(str(report.folder))}\ncache:  {escape(str(report.cache))}")
        out.print(f"run:    {escape(str(report.run))}\nnext:")
        for command in report.commands:
            out.print(f"  {escape(command)}")
