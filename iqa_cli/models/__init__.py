"""The model zoo: `create(name, **config)` builds a network, `load_checkpoint` loads weights.

Architecture files register themselves on import; add one import line below per new file.
"""

from iqa_cli.models.checkpoint import load_checkpoint, save_checkpoint
from iqa_cli.models.registry import create, get_entry, model_names, register_model

# Architecture modules (each registers its networks):
# (added by the model-zoo work; keep one line per file)
# isort: split
import iqa_cli.models.aliqa  # noqa: F401
import iqa_cli.models.botnet  # noqa: F401
import iqa_cli.models.ieit  # noqa: F401
import iqa_cli.models.ssliqa  # noqa: F401
import iqa_cli.models.vipnet  # noqa: F401
import iqa_cli.models.vtiqa  # noqa: F401
import iqa_cli.models.vtiqa_org  # noqa: F401

__all__ = ["create", "get_entry", "load_checkpoint", "model_names", "register_model", "save_checkpoint"]
