"""The largest seed iqa takes: numpy's legacy RandomState, which draws every stored split, validation part
and shuffle of the authors' protocols, takes 32-bit seeds only."""

from __future__ import annotations

MAX_SEED = 2**32 - 1


def check_seed(value: int, option: str) -> None:
    """A ConfigError naming `option` for a seed outside 0..MAX_SEED (a larger one overflowed deep inside
    numpy or HDF5, as an internal error after the work had begun)."""
    from iqa_cli.errors import ConfigError

    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{option}: must be a whole number from 0 to {MAX_SEED}, got {value}")
