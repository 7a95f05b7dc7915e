"""Resize policies: parsing the options and computing the stored size."""

from __future__ import annotations

import pytest

from iqa_cli.data.resize import ResizePolicy, as_policy, parse_policy, policy_from_options
from iqa_cli.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("none", ResizePolicy("none")),
        ("NONE", ResizePolicy("none")),
        ("244x244", ResizePolicy("fixed", width=244, height=244)),
        ("512X384", ResizePolicy("fixed", width=512, height=384)),
        (" 224 ", ResizePolicy("fixed", width=224, height=224)),
        ("short:512", ResizePolicy("short", short=512)),
        ("Short=384", ResizePolicy("short", short=384)),
    ],
)
def test_parse_policy(text, expected):
    assert parse_policy(text) == expected
    assert parse_policy(str(expected)) == expected  # the stored string parses back to the same policy


@pytest.mark.parametrize("text", ["", "x244", "244x", "0x10", "10x0", "short:", "short:0", "big", "-5x5", "70000x5"])
def test_invalid_sizes_are_one_line_config_errors(text):
    with pytest.raises(ConfigError) as info:
        parse_policy(text)
    assert "\n" not in str(info.value)


def test_options_and_dataset_default():
    assert policy_from_options(None, None, "512x384") == ResizePolicy("fixed", width=512, height=384)
    assert policy_from_options("none", None, "512x384") == ResizePolicy("none")
    assert policy_from_options(None, 300, "none") == ResizePolicy("short", short=300)
    with pytest.raises(ConfigError, match="mutually exclusive"):
        policy_from_options("244x244", 300, "none")
    assert as_policy(None, "short:64") == ResizePolicy("short", short=64)
    assert as_policy("10x20") == ResizePolicy("fixed", width=10, height=20)


def test_output_sizes():
    assert ResizePolicy("none").output_size(640, 480) == (640, 480)
    assert ResizePolicy("fixed", width=244, height=244).output_size(1024, 768) == (244, 244)
    short = ResizePolicy("short", short=384)
    assert short.output_size(1024, 768) == (512, 384)  # landscape
    assert short.output_size(768, 1024) == (384, 512)  # portrait
    assert short.output_size(500, 500) == (384, 384)
    assert ResizePolicy("short", short=512).output_size(4000, 3000) == (683, 512)  # 682.67 rounds up
    assert ResizePolicy("short", short=100).output_size(50, 30) == (167, 100)  # upscales small images too


def test_file_sizes_keep_an_image_s_aspect_where_a_fixed_size_would_squash_it():
    """`iqa predict` sizes files as the model's training cache stored its images, but a KonIQ cache stored
    at 512x384 (all 4:3) would squash a 3:4 phone photo into 4:3, which the model never saw."""
    fixed = parse_policy("512x384")
    assert fixed.file_size(1024, 768) == (512, 384)  # the cache's own images: as stored
    assert fixed.file_size(3000, 4000) == (384, 512)  # portrait: scaled to the shorter side, not squashed
    assert fixed.file_size(1000, 1000) == (384, 384)
    assert parse_policy("short:768").file_size(4000, 3000) == (1024, 768)  # as output_size
    assert parse_policy("244x244").file_size(500, 500) == (244, 244)
