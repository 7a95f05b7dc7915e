"""File names as text, whatever the locale.

A file system stores names as bytes, and Python decodes them with the locale's encoding: under a
Latin-1 locale (glibc's `LANG=en_US`) the UTF-8 name `café_写真.jpg` reads as `cafÃ©_å\x86\x99...`, and in
the C locale without UTF-8 mode as surrogate escapes. iqa keeps every image name as text (the name's
bytes read as UTF-8, as the CSV files that list them are read), so a name found on disk equals the one a
metadata file spells, and the names written to caches and CSV files are the files' own, in UTF-8.

A name may also hold characters a terminal acts on (a newline, an escape sequence, a direction override):
`printable` shows those as backslash escapes wherever text is meant for a person.
"""

from __future__ import annotations

import codecs
import os
import re

ESCAPE_ERRORS = "iqa.escape"

# Control characters (C0, DEL, C1) and the invisible marks that reorder text on screen (bidirectional
# embeddings, overrides and isolates): a file name holding them could start a line of its own in a log,
# recolour or erase the terminal's earlier lines (a warning), or show its letters in another order.
_ACTS_ON_TERMINAL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_SHORT_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def printable(text: str) -> str:
    """`text` for a person's screen or a log line: each character a terminal would act on (see above) as a
    backslash escape (`\\t`, `\\n`, `\\x1b`, `\\u202e`); everything else as it is. Files written for programs
    (CSV, JSON) keep the exact names."""
    return _ACTS_ON_TERMINAL.sub(_escaped, text)


def _escaped(found: re.Match[str]) -> str:
    char = found.group()
    return _SHORT_ESCAPES.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


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


def hidden_name(name: str) -> bool:
    """A file or folder name that is never an image collection's content: hidden (`.name`), or the
    `__MACOSX/` shadow folder macOS zips carry beside every folder."""
    return name.startswith(".") or name == "__MACOSX"
