"""Text files a user wrote (a score CSV, a list of labelled images), in the encodings spreadsheets save."""

from __future__ import annotations

import codecs
from pathlib import Path

from iqa_cli.errors import DataError


def read_user_text(path: Path) -> str:
    """The text of `path`: UTF-8 (with or without a byte-order mark), or UTF-16 with its mark (Excel's
    "Unicode Text"). Anything else is one DataError naming the file; a file that reads as Windows-1252
    (Excel's plain "CSV", with an accented name) says so, since guessing would misspell names."""
    raw = path.read_bytes()
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise DataError("is not valid UTF-16 text (it starts with UTF-16's byte-order mark)", path=path) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    hint = ""
    if b"\x00" not in raw:
        try:
            raw.decode("cp1252")
            hint = " (it reads as Windows-1252 or Latin-1, Excel's plain CSV: save it as CSV UTF-8)"
        except UnicodeDecodeError:
            pass
    raise DataError(f"is not a UTF-8 text file{hint}", path=path)
