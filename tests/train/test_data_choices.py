"""What a cache makes of a run's options (`iqa_cli.train.choices`): recorded, read back from run.json or a
checkpoint's metadata, and compared."""

from __future__ import annotations

import json

from iqa_cli.train.choices import DataChoices, checkpoint_choices, choices_change
from iqa_cli.train.labels import ZSCORE_COLUMN, LabelMap
from iqa_cli.train.recipes import get_recipe
from iqa_cli.train.trainer import resolve_config

RAW = LabelMap(1.0, 0.0, "raw scores")


def test_a_checkpoint_says_which_options_its_dataset_resolved():
    meta = {
        "labels": json.dumps(RAW.to_meta()),
        "params": json.dumps({"canvas": [768, 768], "dpm_view": "auto", "epochs": 35}),
        "params_on_dataset": json.dumps({"canvas": [576, 768], "dpm_view": "crop", "epochs": 35}),
    }
    choices = checkpoint_choices(meta)
    assert choices == DataChoices(RAW, {"canvas": [576, 768], "dpm_view": "crop"})
    assert checkpoint_choices({"model": "vipnet"}) is None  # not an iqa checkpoint: nothing to compare


def test_changes_name_the_labels_and_the_options_that_differ():
    given = resolve_config(get_recipe("vipnet"), tiny=False, config_file=None, overrides={}).params
    before = DataChoices(RAW, {"canvas": [576, 768], "dpm_view": "crop"})
    assert choices_change(None, before, given) is None  # nothing recorded: nothing to compare
    assert choices_change(before, DataChoices(LabelMap(1.0, 0.0, "reworded"), dict(before.params)), given) is None
    now = DataChoices(LabelMap(1.0, 0.0, "z", column=ZSCORE_COLUMN), {"canvas": [384, 512], "dpm_view": "crop"})
    assert choices_change(before, now, given) == (
        "labels raw scores (scores), now z (mos_zscore); canvas [576, 768] on this dataset, now [384, 512]"
    )
    # an option resolved on one side only is compared with the given value on the other
    assert choices_change(DataChoices(RAW, {}), DataChoices(RAW, {"dpm_view": "resize"}), given) == (
        "dpm_view 'auto' on this dataset, now 'resize'"
    )
