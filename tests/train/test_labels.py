"""Label maps: what they start from (`column`), how they are recorded, when two give the same targets, and
which way their values run."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from iqa_cli.errors import DataError
from iqa_cli.train.labels import LABEL_SCALES, ZSCORE_COLUMN, LabelMap, directed, direction_problem, recorded_labels


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


DMOS = {"dataset": "dm", "native_range": (0.0, 100.0), "lower_better": True}
MOS = {"dataset": "mo", "native_range": (1.0, 5.0), "lower_better": False}


@pytest.mark.parametrize("scale", ["paper", "range", "native"])
def test_a_label_map_knows_which_way_its_values_run(scale):
    on_dmos, on_mos = (directed(LABEL_SCALES[scale](attrs), attrs) for attrs in (DMOS, MOS))
    assert on_mos.lower_better is False
    # paper and range reverse a DMOS set's scores, so higher is better; native keeps them lower-is-better
    assert on_dmos.lower_better is (scale == "native")
    assert LabelMap.from_meta(on_dmos.to_meta()) == on_dmos
    assert recorded_labels({"labels": json.dumps(on_dmos.to_meta())}) == on_dmos


def test_scores_that_run_the_other_way_than_the_labels_are_a_problem():
    native_dmos = directed(LABEL_SCALES["native"](DMOS), DMOS)
    native_mos = directed(LABEL_SCALES["native"](MOS), MOS)
    paper_mos = directed(LABEL_SCALES["paper"](MOS), MOS)
    problem = direction_problem(native_dmos, native_mos, "m.safetensors", "mo", advice="train it")
    assert problem is not None
    assert problem.startswith("m.safetensors predicts scores where lower is better")
    assert "mo's labels for it are scores where higher is better" in problem and "train it with" in problem
    assert direction_problem(native_mos, native_dmos, "m", "dm", advice="x") is not None
    assert direction_problem(paper_mos, native_mos, "m", "mo", advice="x") is None
    # A checkpoint written before iqa recorded the direction: nothing to compare.
    older = LabelMap.from_meta({"scale": 1.0, "offset": 0.0, "description": "native scores"})
    assert older.lower_better is None and direction_problem(older, native_mos, "m", "mo", advice="x") is None
