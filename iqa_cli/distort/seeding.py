"""Random streams for generation that do not depend on order, workers, shards or resumption.

Every (reference, type, level) image draws from its own generator seeded by (seed, ref_id, type,
level), and the per-reference choice of types (`--per-ref`) from one seeded by (seed, ref_id), so
a shard, a resumed run and a single uninterrupted run write identical pixels.
"""

from __future__ import annotations

import numpy as np

_PAIR = 1  # stream-kind tags keep the two uses from ever sharing a seed
_CHOICE = 2


def pair_rng(seed: int, ref_id: int, type_id: int, level: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([_PAIR, int(seed), int(ref_id), int(type_id), int(level)]))


def choose_types(seed: int, ref_id: int, types: tuple[int, ...], per_ref: int | None) -> tuple[int, ...]:
    """The types generated for one reference: `types` itself, or `per_ref` of them drawn without replacement
    (in increasing order)."""
    if per_ref is None or per_ref >= len(types):
        return types
    rng = np.random.default_rng(np.random.SeedSequence([_CHOICE, int(seed), int(ref_id)]))
    picked = rng.choice(len(types), size=per_ref, replace=False)
    return tuple(types[i] for i in sorted(picked))
