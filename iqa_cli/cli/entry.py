"""The `iqa` console script and `python -m iqa_cli`: the standard descriptors made safe, then the CLI.

Nothing but the standard library is imported before `sanitise_standard_descriptors` has run.
"""

from __future__ import annotations

import os
import sys

_STANDARD = ((0, os.O_RDONLY, "stdin", "r"), (1, os.O_WRONLY, "stdout", "w"), (2, os.O_WRONLY, "stderr", "w"))


def sanitise_standard_descriptors() -> None:
    """Open /dev/null on each standard descriptor the caller left closed (`iqa ... >&-`, `2>&-`, a daemon).

    Python then sets `sys.stdout` or `sys.stderr` to None, and the CLI failed at start with a traceback.
    Worse, the lowest free descriptor goes to the next file opened: a cache or a checkpoint would become
    descriptor 2, and whatever a library writes to standard error (HDF5's error stack, a C warning) would
    land inside it. What goes to a closed stream is discarded, as OpenSSH and daemons do."""
    for number, flags, name, mode in _STANDARD:  # in order: each open takes the lowest free descriptor
        try:
            os.fstat(number)
            continue
        except OSError:
            pass
        opened = os.open(os.devnull, flags)
        if opened != number:
            os.dup2(opened, number)
            os.close(opened)
        if getattr(sys, name) is None:
            setattr(sys, name, open(number, mode, encoding="utf-8", closefd=False))  # noqa: SIM115 - for the process


def main() -> None:  # pragma: no cover - the `iqa` console script and `python -m iqa_cli`
    sanitise_standard_descriptors()
    from iqa_cli.cli.main import main as run_cli

    run_cli()
