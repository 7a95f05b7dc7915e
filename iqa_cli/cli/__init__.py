"""The command-line layer: parses arguments and calls the core. Only this package imports typer/rich."""
