"""The weights store and registry: fetch, verify, import and resolve checkpoints safely.

Public API for other commands: `resolve_weights(name_or_path)` returns a checkpoint file (a path as
given, a name in the store, or a known name fetched into the store when online).
"""

from iqa_cli.envvars import offline
from iqa_cli.weights.fetch import FetchOptions, fetch
from iqa_cli.weights.names import validate_name
from iqa_cli.weights.registry import KnownWeights, get_known, known_weights
from iqa_cli.weights.resolve import resolve_weights
from iqa_cli.weights.store import StoredWeights, WeightStore

__all__ = [
    "FetchOptions",
    "KnownWeights",
    "StoredWeights",
    "WeightStore",
    "fetch",
    "get_known",
    "known_weights",
    "offline",
    "resolve_weights",
    "validate_name",
]
