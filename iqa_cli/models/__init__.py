"""The model zoo: `create(name, **config)` builds a network, `load_checkpoint` loads weights.

Architecture files register themselves when first needed (`iqa_cli.models.registry`): importing this
package builds and imports no network, open_clip included.
"""

from iqa_cli.models.checkpoint import load_checkpoint, save_checkpoint
from iqa_cli.models.registry import create, get_entry, model_names, register_model

__all__ = ["create", "get_entry", "load_checkpoint", "model_names", "register_model", "save_checkpoint"]
