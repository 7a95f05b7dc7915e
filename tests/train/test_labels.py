"""Label maps: what they start from (`column`), how they are recorded, and when two give the same targets."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from iqa_cli.errors import DataError
from iqa_cli.train.labels import ZSCORE_COLUMN, LabelMap


def test_a_label_map_reads_its_column_and_records_it():
    data = SimpleNamespace(scores=np.array([1.0, 2.0]), mos_zscore=np.array([10.0, 30.0]))
    zscore = LabelMap(1.0, 0.0, "z", column=ZSCORE_COLUMN)
    assert zscore.source_scores(data, "c.h5").tolist() == [10.0, 30.0]
    assert LabelMap.from_meta(zscore.to_meta()) == zscore
    older = {"scale": 1.0, "offset": 0.0, "description": "raw"}  # a checkpoint written before `column`
    assert LabelMap.from_meta(older).column == "scores"
    with pytest.raises(DataError, match="c.h5: has no 'mos_zscore' scores"):
        zscore.source_scores(SimpleNamespace(scores=np.array([1.0])), "c.h5")
    with pytest.raises(DataError, match="1 images have no finite 'mos_zscore' score"):
        zscore.source_scores(SimpleNamespace(mos_zscore=np.array([1.0, np.nan])), "c.h5")


def test_same_targets_ignores_the_wording_only():
    base = LabelMap(1 / 25, 1.0, "Y/25 + 1")
    assert base.same_targets(LabelMap(1 / 25, 1.0, "livew: Y/25 + 1"))
    assert not base.same_targets(LabelMap(1 / 25, 1.4, "Y/25 + 1"))
    assert not base.same_targets(LabelMap(1 / 25, 1.0, "Y/25 + 1", column=ZSCORE_COLUMN))
