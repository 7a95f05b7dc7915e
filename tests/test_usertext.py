"""Text files a user wrote, in the encodings spreadsheets save."""

from __future__ import annotations

import pytest

from iqa_cli.errors import DataError
from iqa_cli.usertext import read_user_text


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16"])  # utf-16: Excel's "Unicode Text"
def test_utf8_with_or_without_its_mark_and_utf16_with_its_mark_are_read(tmp_path, encoding):
    path = tmp_path / "scores.csv"
    path.write_text("name\tscore\ncafé.jpg\t3.5\n", encoding=encoding)
    assert read_user_text(path) == "name\tscore\ncafé.jpg\t3.5\n"


def test_a_windows_1252_file_is_named_with_what_to_do(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_bytes("name,score\ncafé.jpg,3.5\n".encode("cp1252"))
    with pytest.raises(DataError, match=r"scores.csv: is not a UTF-8 text file \(it reads as Windows-1252"):
        read_user_text(path)
    path.write_bytes(b"\x89HDF\r\n\x1a\n\x00\x00\x81\x8d")  # a binary file: no guess offered
    with pytest.raises(DataError, match=r"is not a UTF-8 text file$"):
        read_user_text(path)
