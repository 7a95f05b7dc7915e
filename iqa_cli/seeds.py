"""The largest seed iqa takes: numpy's legacy RandomState, which draws every stored split, validation part
and shuffle of the authors' protocols, takes 32-bit seeds only."""

from __future__ import annotations

MAX_SEED = 2**32 - 1
