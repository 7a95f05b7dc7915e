"""`python -m iqa_cli` runs the same CLI as the `iqa` console script."""

from iqa_cli.cli.entry import main

if __name__ == "__main__":
    main()
