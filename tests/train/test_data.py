"""`iqa_cli.train.data`: notes on what a cache gives a method."""

from __future__ import annotations

import numpy as np

from iqa_cli.train.data import upscaled_views_note


class _Cache:
    def __init__(self, dataset: str, resize: str, height: int, width: int, n: int = 5) -> None:
        self.attrs = {"dataset": dataset, "resize": resize}
        self.sizes = np.tile([height, width], (n, 1))


VTIQA = [(244, 244), (768, 768)]  # (height, width) of its views


def test_views_upscaled_from_reduced_images_are_noted_and_only_those():
    # KonIQ's 512x384 release kept as it is (the default size): VT-IQA's 768 px view is upscaled from it.
    note = upscaled_views_note(_Cache("koniq", "none", 384, 512), VTIQA, "vtiqa")
    assert note is not None and "reduced release" in note and "1024 px" in note and "768 px view vtiqa" in note
    assert upscaled_views_note(_Cache("koniq", "none", 768, 1024), VTIQA, "vtiqa") is None  # the full-size release
    assert upscaled_views_note(_Cache("koniq", "none", 384, 512), [(384, 512)], "vipnet") is None  # reads 512x384
    assert upscaled_views_note(_Cache("koniq", "none", 384, 512), [(244, 244)], "ieit") is None
    # SSL-IQA's view is 512 high and 384 wide: from the 512x384 release its height is upscaled (384 -> 512),
    # which the largest side (512) did not show.
    note = upscaled_views_note(_Cache("koniq", "none", 384, 512), [(512, 384)], "ssliqa")
    assert note is not None and "384x512 px view ssliqa" in note
    assert upscaled_views_note(_Cache("koniq", "none", 768, 1024), [(512, 384)], "ssliqa") is None
    # Prepared smaller than its default: said as such.
    note = upscaled_views_note(_Cache("koniq", "512x384", 384, 512), VTIQA, "vtiqa")
    assert note is not None and "stored at size 512x384 (its default: none)" in note
    # LIVE Challenge's own 500x500 images: the authors upscale them too, nothing to say.
    assert upscaled_views_note(_Cache("livew", "none", 500, 500), VTIQA, "vtiqa") is None
    assert upscaled_views_note(_Cache("mine", "none", 80, 96), VTIQA, "vtiqa") is None
