"""AL-IQA's selection rule as pure functions: round sizes, ranks, trimmed distances, the band, the Borda combination."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from iqa_cli.errors import ConfigError, DataError
from iqa_cli.train.al.selection import (
    band_ranks,
    descending_ranks,
    head_disagreement,
    round_plan,
    select_for_round,
    select_round,
    template_disagreement,
    trimmed_distance,
    zero_shot_source,
)


def test_livew_25_percent_selects_59_116_116():
    plans = round_plan(1169, 25)
    assert [p.count for p in plans] == [59, 116, 116]  # 291 labelled, 24.9 %: the spec's reference counts
    assert [p.band for p in plans] == [58, 116, 116]  # round 1's band is int(0.05 * 1169); the float arange adds one
    assert [p.fraction for p in plans] == [0.05, 0.1, 0.1]
    assert [p.band_start for p in plans] == [0.66, 0.33, 0.0]
    assert [p.weight for p in plans] == [0.01, 0.01, 0.005]


def test_three_rounds_on_1169_images_select_59_then_116_then_116():
    rng = np.random.default_rng(0)
    uncertainty = rng.random(1169)  # pool order, one value per image (the authors' LIVEW pool size)
    distance = rng.random((5, 50, 1169))  # (repeats, distilled images, images), as livew_ds.mat
    labelled = np.empty(0, dtype=np.int64)
    for plan in round_plan(1169, 25):
        remaining = np.setdiff1d(np.arange(1169), labelled)
        chosen = select_for_round(uncertainty[remaining], distance[:, :, remaining], plan)
        assert chosen.positions.size == plan.count and np.unique(chosen.positions).size == plan.count
        in_band = np.isin(chosen.positions, chosen.band).sum()
        # Weight 0.01: the band wins, but for a few of the least uncertain images (the authors' files: 58 of 59).
        assert in_band >= 0.9 * plan.count
        labelled = np.concatenate([labelled, remaining[chosen.positions]])
    assert labelled.size == 291 and np.unique(labelled).size == 291


@pytest.mark.parametrize(("budget", "total"), [(5, 503), (10, 1006), (25, 2518), (80, 8058)])
def test_inferred_schedule_reproduces_the_released_koniq_index_sizes(budget, total):
    assert sum(p.count for p in round_plan(10073, budget)) == total  # koniq_rt{05,10,25,80}_index.mat


def test_exact_counts_and_bad_budgets():
    assert [p.count for p in round_plan(1169, 25, authors_counts=False)] == [58, 116, 116]
    with pytest.raises(ConfigError, match="no image"):
        round_plan(30, 5)  # 0.01 * 30 images: round 1 gets nothing
    with pytest.raises(ConfigError, match="percentage"):
        round_plan(1000, 100)
    with pytest.raises(ConfigError, match="one value per round"):
        round_plan(1000, 25, shares=(1, 2), band_starts=(0.66, 0.33, 0.0))


def test_ranks_give_the_largest_value_the_pool_size():
    assert descending_ranks(np.array([0.3, 0.1, 0.9, 0.2])).tolist() == [3, 1, 4, 2]


def test_trimmed_distance_sums_the_3_of_5_closest_to_their_mean():
    distance = np.zeros((5, 2, 2))
    distance[:, 0, 0] = [1, 2, 3, 4, 100]  # mean 22: keeps 4, 3, 2 -> 9
    distance[:, 1, 0] = [5, 5, 5, 5, 5]  # -> 15
    distance[:, 0, 1] = [0, 10, 10, 10, 20]  # mean 10: keeps the three 10s -> 30
    distance[:, 1, 1] = [2, 7, 2, 2, 2]  # mean 3: the 7 is dropped -> 6
    assert trimmed_distance(distance).tolist() == [24.0, 36.0]
    assert trimmed_distance(distance, keep=5).tolist() == [135.0, 65.0]  # everything
    with pytest.raises(DataError, match="repeats"):
        trimmed_distance(np.zeros((5, 3)))
    with pytest.raises(ConfigError, match="keep 6 of 5"):
        trimmed_distance(distance, keep=6)


def test_the_band_starts_at_its_share_of_the_uncertainty_order():
    uncertainty = np.array([0.9, 0.1, 0.5, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4, 0.0])  # 10 images
    ranks, band = band_ranks(uncertainty, band=3, band_start=0.5)
    # Sorted by uncertainty, descending: 0.9 0.8 0.7 0.6 0.5 | 0.4 0.3 0.2 | 0.1 0.0 -> positions 8, 4, 6.
    assert band.tolist() == [8, 4, 6]
    assert ranks[[8, 4, 6]].tolist() == [0, -1, -2]
    assert ranks[[0, 5, 3, 7, 2, 1, 9]].tolist() == [10, 9, 8, 7, 6, 2, 1]
    _, at_the_end = band_ranks(uncertainty, band=3, band_start=0.9)  # moved back to end with the pool
    assert at_the_end.tolist() == [6, 1, 9]


def test_without_representativeness_a_round_takes_its_band_and_then_the_least_uncertain():
    uncertainty = np.array([0.9, 0.1, 0.5, 0.7, 0.3, 0.8, 0.2, 0.6, 0.4, 0.0])
    flat = np.zeros(10)
    chosen = select_round(uncertainty, flat, count=3, band=3, band_start=0.5, weight=0.0)
    assert sorted(chosen.positions.tolist()) == [4, 6, 8]
    # Round 1's extra image (count = band + 1) is the least uncertain one outside the band (rank 1).
    chosen = select_round(uncertainty, flat, count=4, band=3, band_start=0.5, weight=0.0)
    assert sorted(chosen.positions.tolist()) == [4, 6, 8, 9]


def test_borda_combination_by_hand_with_ties_as_numpy_argsort():
    uncertainty = np.array([0.5, 0.4, 0.3, 0.2, 0.1])  # ranks 5 4 3 2 1; the band (1 at st=0) makes image 0's 0
    distance = np.array([0.1, 0.2, 0.3, 0.4, 0.5])  # ranks 1 2 3 4 5
    chosen = select_round(uncertainty, distance, count=2, band=1, band_start=0.0, weight=1.0)
    assert chosen.score.tolist() == [1.0, 6.0, 6.0, 6.0, 6.0]
    # Four-way tie at 6: numpy's argsort keeps small arrays in pool order, so image 1 joins image 0;
    # the authors take the tail of the reversed argsort, i.e. [1, 0].
    assert chosen.positions.tolist() == [1, 0]
    assert chosen.positions.tolist() == np.argsort(chosen.score)[::-1][-2:].tolist()
    chosen = select_round(uncertainty, distance, count=2, band=1, band_start=0.0, weight=0.5)
    assert chosen.score.tolist() == [0.5, 5.0, 4.5, 4.0, 3.5]
    assert chosen.positions.tolist() == [4, 0]  # the 2 smallest scores, largest first


def test_selection_refuses_bad_input():
    with pytest.raises(ValueError, match="distances"):
        select_round(np.ones(3), np.ones(4), count=1, band=1, band_start=0.0, weight=1.0)
    with pytest.raises(DataError, match="finite"):
        select_round(np.array([1.0, np.nan]), np.ones(2), count=1, band=1, band_start=0.0, weight=1.0)
    with pytest.raises(ConfigError, match="cannot select"):
        select_round(np.ones(3), np.ones(3), count=4, band=1, band_start=0.0, weight=1.0)


def test_disagreement_of_templates_and_of_heads():
    probabilities = np.array(
        [
            [[0.2, 0.5], [0.4, 0.5], [0.6, 0.5]],  # pair 0: templates disagree on image 0 only
            [[0.5, 0.0], [0.5, 0.5], [0.5, 1.0]],  # pair 1: on image 1 only
        ]
    )
    np.testing.assert_allclose(template_disagreement(probabilities), [np.std([0.2, 0.4, 0.6]), np.std([0, 0.5, 1])])
    np.testing.assert_allclose(head_disagreement(np.array([[0.5, 0.5, 0.5], [0.0, 0.5, 1.0]])), [0.0, np.sqrt(1 / 6)])


AUTHORS_ALIQA = Path(__file__).resolve().parents[2].parent / "shared" / "authors-data" / "aliqa"


@pytest.mark.skipif(not AUTHORS_ALIQA.is_dir(), reason="../shared/authors-data/aliqa (the authors' files) absent")
def test_selection_on_the_authors_livew_files_picks_59_116_116():
    """The authors' LIVEW inputs: `livew_ds.mat` distances, round 1's zero-shot votes (three templates of
    six prompt pairs), rounds 2 and 3's three-head probabilities; all in their [X; Xtest] column order."""
    from scipy.io import loadmat

    distance = loadmat(AUTHORS_ALIQA / "livew_ds.mat")["distance"]
    assert distance.shape == (5, 50, 1169)
    votes = loadmat(AUTHORS_ALIQA / "prompt3vote_livew.mat")
    first = np.stack([votes[f"output{t}"] for t in (1, 2, 3)], axis=1)  # (pairs 6, templates 3, 1169)
    later = []
    for step in ("second", "third"):
        heads = loadmat(AUTHORS_ALIQA / f"prompt3vote_rt25_{step}step_livew.mat")
        later.append(np.concatenate([heads[f"output{h}"] for h in (1, 2, 3)], axis=0).T)  # (1169, heads 3)
    uncertainties = [template_disagreement(first), head_disagreement(later[0]), head_disagreement(later[1])]
    labelled = np.empty(0, dtype=np.int64)
    counts = []
    for plan, uncertainty in zip(round_plan(1169, 25), uncertainties, strict=True):
        remaining = np.setdiff1d(np.arange(1169), labelled)
        chosen = select_for_round(uncertainty[remaining], distance[:, :, remaining], plan)
        counts.append(int(chosen.positions.size))
        labelled = np.concatenate([labelled, remaining[chosen.positions]])
    assert counts == [59, 116, 116] and np.unique(labelled).size == 291


def test_round_one_without_pretrained_clip_is_not_called_zero_shot_clip():
    """`--tiny` and `--pretrained none` score the prompts with random weights: the report said "zero-shot CLIP"."""
    from types import SimpleNamespace

    assert zero_shot_source(SimpleNamespace(pretrained="clip_vit_b16_openai_st")).startswith("zero-shot CLIP")
    said = zero_shot_source(SimpleNamespace(pretrained=None))
    assert said.startswith("untrained CLIP") and "not AL-IQA's zero-shot signal" in said


def test_labelled_names_match_in_either_unicode_form(tmp_path):
    """`--labelled` names typed composed (NFC) find images stored decomposed (NFD, as macOS archives keep them)."""
    import unicodedata

    from iqa_cli.train.al.labelling import match_names

    names = [unicodedata.normalize("NFD", "sub/café.png"), "b.png"]
    found = match_names([unicodedata.normalize("NFC", "SUB\\Café.png")], names, tmp_path / "labelled.txt")
    assert list(found) == [0]


def test_a_labelled_name_matching_two_pool_images_but_neither_exactly_is_refused(tmp_path):
    """A pool holding 'a.jpg' and 'A.JPG' (two files on Linux): 'A.jpg' was taken for whichever came last,
    marking an image labelled that may not be, and leaving the other to be selected again."""
    from iqa_cli.errors import DataError
    from iqa_cli.train.al.labelling import match_names

    names = ["a.jpg", "A.JPG", "b.png"]
    assert list(match_names(["A.JPG", "B.PNG"], names, tmp_path / "labelled.txt")) == [1, 2]  # exact, or one fold
    with pytest.raises(DataError, match=r"labelled name 'A.jpg' matches 'a.jpg', 'A.JPG' of the pool but none exactly"):
        match_names(["A.jpg"], names, tmp_path / "labelled.txt")


def test_a_text_list_of_labelled_images_takes_each_line_whole(tmp_path):
    """A .txt list was split like a CSV: `photo, 2023.jpg` became `photo` and `"quoted".jpg` lost its quotes,
    so those images were "not images of the pool". A .csv still reads its name column."""
    from iqa_cli.train.al.labelling import read_names

    listed = tmp_path / "labelled.txt"
    listed.write_text('# labelled by hand\nphoto, 2023.jpg\n"quoted".jpg\n\n  plain.png  \n', encoding="utf-8")
    assert read_names(listed) == ["photo, 2023.jpg", '"quoted".jpg', "plain.png"]
    table = tmp_path / "labelled.csv"
    table.write_text('score,name\n3.1,"photo, 2023.jpg"\n2.0,plain.png\n', encoding="utf-8")
    assert read_names(table) == ["photo, 2023.jpg", "plain.png"]
