"""File names as text whatever the locale (the end-to-end case: tests/adversarial/test_locales.py)."""

from __future__ import annotations

import io
import os

from iqa_cli.fsnames import name_path, name_text, register_escape_errors


def test_a_name_round_trips_between_text_and_the_file_system():
    for text in ["plain.jpg", "café_写真.png", "bad_\udce9.jpg"]:  # the last: a byte that is no UTF-8
        assert name_text(name_path(text)) == text
        assert os.fsencode(name_path(text)) == text.encode("utf-8", "surrogateescape")


def test_the_stream_handler_writes_escaped_bytes_back_and_escapes_the_rest():
    """In the C locale without UTF-8 mode, streams were 'surrogateescape', which fails on a table's dagger."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii", errors=register_escape_errors())
    stream.write("caf\udcc3\udca9 † ok")
    stream.flush()
    assert raw.getvalue() == b"caf\xc3\xa9 \\u2020 ok"


def test_printable_escapes_what_a_terminal_acts_on_and_keeps_the_rest():
    from iqa_cli.fsnames import printable

    assert printable("a\tb\nc\rd\x1b[2Ke\x7f\x9b\u202egnp.exe") == "a\\tb\\nc\\rd\\x1b[2Ke\\x7f\\x9b\\u202egnp.exe"
    kept = "café 写真  two spaces \\ back\udcff.jpg"  # letters, runs of spaces, backslashes, undecodable bytes
    assert printable(kept) == kept
