"""`python -m iqa_cli` runs the same CLI as the `iqa` console script."""

from iqa_cli.cli.main import app

if __name__ == "__main__":
    app(prog_name="iqa")
