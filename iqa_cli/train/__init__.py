"""Training, evaluation and prediction: the engine, the recipes, runs and checkpoints.

`iqa_cli.train` is also the Python API's training function (`iqa_cli.train("vtiqa", "koniq", epochs=10)`,
see `iqa_cli.api.train`): the package's module object is callable, so the documented call works even
though a sub-package of the same name exists.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from iqa_cli.api import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
