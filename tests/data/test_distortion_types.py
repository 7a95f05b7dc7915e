"""Distortion types read from the official image names of the synthetic datasets."""

from __future__ import annotations

import pytest

from iqa_cli.data.distortion_types import distortion_types
from tests.data.fixtures import FIXTURES


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("kadid10k", {"01 Gaussian blur", "09 JPEG2000"}),
        ("tid2013", {"01 Additive Gaussian noise", "08 Gaussian blur", "24 Sparse sampling and reconstruction"}),
        ("live", {"jp2k", "jpeg", "wn", "gblur", "fastfading"}),
        ("csiq", {"awgn", "jpeg2000", "contrast", "blur"}),
    ],
)
def test_types_of_the_official_layouts(tmp_path, dataset, expected):
    names = [r.name for r in FIXTURES[dataset](tmp_path).records]
    types = distortion_types(dataset, names)
    assert types is not None and None not in types
    assert expected <= set(types)


def test_aliases_unknown_names_and_authentic_datasets():
    assert distortion_types("kadid", ["images/I07_16_05.png", "images/I07.png"]) == ["16 Brighten", None]
    assert distortion_types("tid2013", ["distorted_images/I25_25_1.bmp"]) == [None]  # TID2013 has 24 types
    assert distortion_types("livew", ["Images/3.bmp"]) is None
    assert distortion_types("my_custom_set", ["a/b.png"]) is None
