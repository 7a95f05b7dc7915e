"""Comma-separated option values: every entry named, none empty."""

from __future__ import annotations

import pytest

from iqa_cli.errors import ConfigError
from iqa_cli.textlist import comma_list


def test_entries_are_stripped_and_a_blank_text_is_no_entry():
    assert comma_list(" livew, koniq10k ,spaq", "--cross") == ["livew", "koniq10k", "spaq"]
    assert comma_list("0:0.01;11:0.001", "lr_phases", separators=",;") == ["0:0.01", "11:0.001"]
    assert comma_list("  ", "--cross") == []


@pytest.mark.parametrize("text", ["livew,,kadid10k", "livew,", ",livew", "livew, ,kadid10k"])
def test_an_empty_entry_is_an_error_naming_the_option(text):
    """`--cross "$A,$B"` with B unset gave `livew,`, and the empty entry was dropped: an evaluation on fewer
    datasets than the command named, exit 0."""
    with pytest.raises(ConfigError, match=r"^--cross: an empty entry in "):
        comma_list(text, "--cross")
