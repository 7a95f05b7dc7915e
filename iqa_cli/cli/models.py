"""`iqa models`: the registered networks with parameter counts and input layouts."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Add `iqa models` to the root app."""

    @root.command("models")
    def models_command(
        json_output: bool = typer.Option(False, "--json", help="Print one JSON list on stdout instead of a table."),
    ) -> None:
        """List every network `iqa` can build: name, parameter count, input layout, description.

        Networks are built on PyTorch's `meta` device (shapes only, no memory), so this is quick.
        """
        from rich.markup import escape
        from rich.table import Table

        from iqa_cli.cli.console import err, out, print_json
        from iqa_cli.weights.importer import model_summaries

        rows = model_summaries()
        if json_output:
            print_json(rows)
            return
        table = Table(show_lines=False)
        table.add_column("name", style="bold", no_wrap=True)
        table.add_column("parameters", justify="right", no_wrap=True)
        table.add_column("inputs")
        table.add_column("description")
        for row in rows:
            params = "?" if row["parameters"] is None else f"{row['parameters']:,}"
            table.add_row(escape(row["name"]), params, escape(row["inputs"]), escape(row["description"]))
        out.print(table)
        unbuilt = [row["name"] for row in rows if row["parameters"] is None]
        if unbuilt:
            err.print(f"warning: could not build {', '.join(unbuilt)} to count parameters", markup=False)
