"""`iqa_cli.train.evaluate`'s guard against scoring a model on images it was trained on."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from iqa_cli.errors import DataError
from iqa_cli.train.data import split_digest
from iqa_cli.train.evaluate import _check_unseen_test
from iqa_cli.train.recipes.vtiqa import VTIQAParams
from iqa_cli.train.weights import TrainedSpec

CACHE = Path("cache.h5")


class TwoSplits:
    """Ten images: split a trains on 0-5 and tests 6-9; split b tests 6-8 (unseen by a), c tests 4-6."""

    names = [f"img{i}.png" for i in range(10)]
    parts = {
        "a": {"train": np.arange(6), "test": np.arange(6, 10)},
        "b": {"train": np.array([0, 1, 2, 3, 4, 5, 9]), "test": np.array([6, 7, 8])},
        "c": {"train": np.array([0, 1, 2, 3, 7, 8, 9]), "test": np.array([4, 5, 6])},
    }

    def split(self, name: str) -> dict[str, np.ndarray]:
        if name not in self.parts:
            raise DataError(f"cache has no split '{name}'")
        return self.parts[name]


def spec(split: str, digest: str | None = None, dataset: str = "mini") -> TrainedSpec:
    meta = {"dataset": dataset, "split": split, **({"split_digest": digest} if digest else {})}
    return TrainedSpec({}, meta, VTIQAParams(), True, "model.safetensors")


def check(model: TrainedSpec, split: str) -> None:
    data = TwoSplits()
    _check_unseen_test(model, data, "mini", split, data.parts[split]["test"], CACHE)


def test_a_test_part_holding_training_images_is_refused_with_the_count():
    with pytest.raises(DataError, match=r"2 of the 3 test images of split c are images model.safetensors was trained"):
        check(spec("a"), "c")


def test_a_test_part_the_model_never_saw_is_allowed(caplog):
    data = TwoSplits()
    with caplog.at_level(logging.INFO, logger="iqa_cli.train.evaluate"):
        check(spec("a", split_digest(data, data.parts["a"])), "b")
    assert "holds none of the images" in caplog.text
    check(spec("a"), "a")  # its own split
    check(spec("a", dataset="other"), "c")  # trained elsewhere: any part is unseen


def test_unknown_training_images_are_refused():
    with pytest.raises(DataError, match="split gone of mini, which is not in this cache"):
        check(spec("gone"), "b")
    with pytest.raises(DataError, match="split a of mini, which holds other images in this cache"):
        check(spec("a", digest="0" * 16), "b")


class FullReference(TwoSplits):
    """The same splits over 5 references of 2 distortions each: image i shows reference i // 2."""

    ref_ids = np.arange(10) // 2

    def __len__(self) -> int:
        return 10


def test_a_test_image_of_a_reference_the_model_trained_on_is_refused():
    """On a full-reference dataset an unseen image of a trained reference (another distortion of the same
    scene) is no unseen content. Split a trains images 0-5 (references 0-2): split b's test images 6-8
    (references 3 and 4) are unseen. A model that also trained image 9 (reference 4) has seen image 8's scene."""
    data = FullReference()
    _check_unseen_test(spec("a"), data, "mini", "b", data.parts["b"]["test"], CACHE)
    data.parts = {**data.parts, "d": {"train": np.array([0, 1, 2, 3, 4, 5, 9]), "test": np.array([6, 7, 8])}}
    with pytest.raises(DataError, match=r"1 of the 1 test images of split e show references model.safetensors"):
        _check_unseen_test(spec("d"), data, "mini", "e", np.array([8]), CACHE)
