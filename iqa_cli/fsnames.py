"""File names as text, whatever the locale.

A file system stores names as bytes, and Python decodes them with the locale's encoding: under a
Latin-1 locale (glibc's `LANG=en_US`) the UTF-8 name `café_写真.jpg` reads as `cafÃ©_å\x86\x99...`, and in
the C locale without UTF-8 mode as surrogate escapes. iqa keeps every image name as text (the name's
bytes read as UTF-8, as the CSV files that list them are read), so a name found on disk equals the one a
metadata file spells, and the names written to caches and CSV files are the files' own, in UTF-8.
"""

from __future__ import annotations

import codecs
import os

ESCAPE_ERRORS = "iqa.escape"


def name_text(name: str) -> str:
    """A name as the file system API gave it, as text: its bytes read as UTF-8 (bytes that are no UTF-8
    stay surrogate escapes, written back as they were with `errors="surrogateescape"`)."""
    return os.fsencode(name).decode("utf-8", "surrogateescape")


def name_path(text: str) -> str:
    """The inverse of `name_text`: the name to hand to the file system API for a text name."""
    return os.fsdecode(text.encode("utf-8", "surrogateescape"))


def _escape(exc: UnicodeError) -> tuple[str | bytes, int]:
    """A surrogate escape goes out as the byte it stands for; any other character a stream cannot encode
    as a backslash escape."""
    if isinstance(exc, UnicodeEncodeError):
        chunk = exc.object[exc.start : exc.end]
        if all("\udc80" <= char <= "\udcff" for char in chunk):
            return bytes(ord(char) - 0xDC00 for char in chunk), exc.end
    return codecs.backslashreplace_errors(exc)


def register_escape_errors() -> str:
    """Register the stream error handler (idempotent) and return its name for `reconfigure(errors=...)`."""
    codecs.register_error(ESCAPE_ERRORS, _escape)
    return ESCAPE_ERRORS
