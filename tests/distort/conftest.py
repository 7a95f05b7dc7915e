from __future__ import annotations

import functools

import numpy as np
import pytest

from iqa_cli.distort.registry import TYPES
from tests.distort.images import natural_photo, synthetic_scene

SEED = 7


@functools.cache
def _scene() -> np.ndarray:
    return synthetic_scene()


@functools.cache
def _outputs(type_id: int) -> tuple[np.ndarray, ...]:
    """The five levels of one type on the synthetic scene (computed once per test session)."""
    image = _scene()
    return tuple(TYPES[type_id].fn(image, level, np.random.default_rng(SEED)) for level in range(1, 6))


@pytest.fixture
def scene() -> np.ndarray:
    return _scene().copy()


@pytest.fixture
def levels_of():
    """levels_of(type_id) -> (level1, ..., level5) outputs on the synthetic scene."""
    return _outputs


@pytest.fixture(params=["synthetic", "photo"])
def any_image(request) -> np.ndarray:
    """The synthetic scene and, when scikit-image is installed, a real photograph."""
    if request.param == "synthetic":
        return _scene().copy()
    photo = natural_photo()
    if photo is None:
        pytest.skip("scikit-image is not installed (its sample photograph is optional)")
    return photo
