"""The shape every distortion type has: a pure function (image, level, rng) -> image.

Two wrappers turn a parameterised implementation into that shape:

- `kadis_type(levels)` for types 1-25, which follow the KADIS-700k toolbox driver
  (`imdist_generator.m`): the uint8 image is min-max normalised to [0, 1] (`mapmm`), distorted with
  the level's parameter, min-max normalised again and written as uint8 (`im2uint8` rounding).
- `uint8_type(levels)` for types 26-30, whose generators work on the uint8 image directly.

The level parameters travel with the function (`fn.levels`), so the registry and the docs read them
from one place.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from iqa_cli.distort.ops import im2uint8, mapmm, to_unit

NUM_LEVELS = 5


class DistortionFn(Protocol):
    levels: tuple[Any, ...]

    def __call__(self, image: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray: ...


class NotApplicable(Exception):
    """This distortion cannot be produced for this image (e.g. type 27 finds no candidate for a level).

    The generator skips the (reference, type) pair and counts it; it is not a user error.
    """


def check_input(image: np.ndarray, level: int) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = getattr(image, "dtype", type(image).__name__), getattr(image, "shape", None)
        raise ValueError(f"expected a uint8 H x W x 3 RGB image, got {got}")
    if not 1 <= int(level) <= NUM_LEVELS:
        raise ValueError(f"level must be 1..{NUM_LEVELS}, got {level}")


def kadis_type(levels: Sequence[Any]) -> Callable[[Callable[..., np.ndarray]], DistortionFn]:
    """Wrap `raw(x: float [0,1] HxWx3, param, rng) -> float image` with the toolbox driver's steps."""

    def wrap(raw: Callable[..., np.ndarray]) -> DistortionFn:
        @functools.wraps(raw)
        def fn(image: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
            check_input(image, level)
            out = raw(to_unit(image), levels[int(level) - 1], rng)
            return im2uint8(mapmm(out))

        fn.levels = tuple(levels)  # type: ignore[attr-defined]
        fn.raw = raw  # type: ignore[attr-defined]
        return fn  # type: ignore[return-value]

    return wrap


def uint8_type(levels: Sequence[Any]) -> Callable[[Callable[..., np.ndarray]], DistortionFn]:
    """Wrap `raw(image: uint8 HxWx3, param, rng) -> uint8 image` (types 26-30)."""

    def wrap(raw: Callable[..., np.ndarray]) -> DistortionFn:
        @functools.wraps(raw)
        def fn(image: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
            check_input(image, level)
            out = raw(image, levels[int(level) - 1], rng)
            assert out.dtype == np.uint8 and out.shape == image.shape
            return out

        fn.levels = tuple(levels)  # type: ignore[attr-defined]
        fn.raw = raw  # type: ignore[attr-defined]
        return fn  # type: ignore[return-value]

    return wrap
