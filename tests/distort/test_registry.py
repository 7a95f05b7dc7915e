"""The table of 30 types (levels exactly as the spec, A.3.1) and the DPM's 150 class ids."""

from __future__ import annotations

import pytest

from iqa_cli.distort.registry import (
    NUM_CLASSES,
    TYPES,
    class_from_name,
    class_id,
    get_type,
    parse_selection,
    type_level,
)
from iqa_cli.errors import ConfigError

# ../shared/specs/methods-vipnet-ssliqa.md, A.3.1 (types 1-29); type 30 is iqa's WebP definition.
SPEC_LEVELS = {
    1: (0.1, 0.5, 1, 2, 5),
    2: (1, 2, 4, 6, 8),
    3: (1, 2, 4, 6, 10),
    4: (1, 3, 6, 8, 12),
    5: (1, 3, 6, 8, 12),
    6: (64, 48, 32, 16, 8),
    7: (0.4, 0.2, 0.1, 0, -0.4),
    8: (1, 2, 3, 6, 9),
    9: (16, 32, 45, 120, 400),
    10: (43, 36, 24, 7, 4),
    11: (0.001, 0.002, 0.003, 0.005, 0.01),
    12: (0.0001, 0.0005, 0.001, 0.002, 0.003),
    13: (0.001, 0.005, 0.01, 0.02, 0.03),
    14: (0.001, 0.005, 0.01, 0.02, 0.05),
    15: (0.01, 0.03, 0.05, 0.1, 0.15),
    16: (0.1, 0.2, 0.4, 0.7, 1.1),
    17: (0.05, 0.1, 0.2, 0.4, 0.8),
    18: (0.15, 0.08, 0, -0.08, -0.15),
    19: (0.05, 0.1, 0.2, 0.5, 1),
    20: (20, 40, 60, 80, 100),
    21: (0.01, 0.05, 0.1, 0.2, 0.5),
    22: (20, 16, 13, 10, 7),
    23: (2, 4, 6, 8, 10),
    24: (1, 2, 3, 6, 12),
    25: (0.3, 0.15, 0, -0.4, -0.6),
    26: (0.061, 0.127, 0.211, 0.316, 0.543),
    27: (33, 30, 27, 24, 21),  # PSNR targets (dB)
    28: (2, 6, 9, 12, 17),
    29: (2, 6, 9, 12, 17),
    30: (30, 16, 8, 3, 0),  # WebP qualities (iqa's choice, decreasing)
}


def test_thirty_types_with_the_spec_levels():
    assert sorted(TYPES) == list(range(1, 31))
    for type_id, levels in SPEC_LEVELS.items():
        assert tuple(TYPES[type_id].levels) == pytest.approx(levels), type_id
    assert len({t.slug for t in TYPES.values()}) == 30


def test_class_ids_cover_0_to_149_once():
    ids = [class_id(t, level) for t in range(1, 31) for level in range(1, 6)]
    assert ids == list(range(NUM_CLASSES)) and NUM_CLASSES == 150
    assert class_id(1, 1) == 0 and class_id(30, 5) == 149 and class_id(10, 3) == 47
    assert all(type_level(class_id(t, lv)) == (t, lv) for t in range(1, 31) for lv in range(1, 6))


@pytest.mark.parametrize("bad", [(0, 1), (31, 1), (1, 0), (1, 6)])
def test_class_id_rejects_out_of_range(bad):
    with pytest.raises(ConfigError):
        class_id(*bad)


def test_type_level_rejects_out_of_range():
    with pytest.raises(ConfigError):
        type_level(150)


def test_get_type():
    assert get_type(10).slug == "jpeg"
    with pytest.raises(ConfigError, match="unknown distortion type"):
        get_type(31)


@pytest.mark.parametrize(
    ("text", "expected"),
    [(None, list(range(1, 31))), ("all", list(range(1, 31))), ("1,2,5-9", [1, 2, 5, 6, 7, 8, 9]), ("3, 3,1", [1, 3])],
)
def test_parse_selection(text, expected):
    assert parse_selection(text, 30, "types") == expected


@pytest.mark.parametrize("text", ["0", "31", "5-3", "a", "1,,2", "2-x"])
def test_parse_selection_errors(text):
    with pytest.raises(ConfigError, match="--types"):
        parse_selection(text, 30, "types")


@pytest.mark.parametrize(
    ("name", "expected"),
    [("a-fleshy-plant-1464418_07_03.bmp", 32), ("I01_01_01.png", 0), ("sub/x_30_05.bmp", 149)],
)
def test_class_from_name(name, expected):
    assert class_from_name(name) == expected


def test_class_from_name_refuses_other_names():
    with pytest.raises(ConfigError, match="TT_LL"):
        class_from_name("photo.png")
