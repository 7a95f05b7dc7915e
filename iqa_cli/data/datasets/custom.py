"""Your own images: any folder plus a CSV of `name,score[,std]`.

Cells are separated by commas; a file whose first line has no comma but a tab (a TSV) or a semicolon
(a spreadsheet's export in many locales) is read with that separator.

The CSV's header row is optional. Without one, the columns are name, score and (optionally) std. A
first row counts as a header only when no cell is a number and at least one names a known column.
With one, the columns are found by name (name/image/file/path, score/mos/dmos/quality, std/sd), or
taken in that order when the names are not recognised. Image names are paths relative to the
dataset root ('/' or '\\' separators); they are matched case-insensitively when the exact spelling
is not on disk. Blank lines and lines starting with '#' are ignored.

`make_spec` builds the `DatasetSpec` for one such dataset: its name (used for the cache file and
its attributes), score type, direction and declared range (default: the observed min and max).
The registered `SPEC` parses the only .csv file at the top of the root folder.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from iqa_cli.data.datasets._files import OnMissing, Row, build_records, check_root, parse_number, to_score
from iqa_cli.data.records import DatasetSpec, Record
from iqa_cli.errors import ConfigError, DataError

NAME_COLUMNS = ("name", "image", "image_name", "filename", "file", "file_name", "path", "img")
SCORE_COLUMNS = ("score", "mos", "dmos", "quality", "label", "rating", "mos_zscore")
STD_COLUMNS = ("std", "sd", "stddev", "std_dev", "mos_std", "score_std")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _is_number(text: str) -> bool:
    try:
        parse_number(text)
    except ValueError:
        return False
    return True


def _columns(header: list[str]) -> tuple[int, int, int | None]:
    lower = [h.strip().lower() for h in header]

    def pick(candidates: tuple[str, ...]) -> int | None:
        return next((lower.index(c) for c in candidates if c in lower), None)

    name, score, std = pick(NAME_COLUMNS), pick(SCORE_COLUMNS), pick(STD_COLUMNS)
    if name is None or score is None:  # unrecognised header: positional, as without one
        return 0, 1, 2 if len(header) > 2 else None
    return name, score, std


def _relative(name: str, root: Path, csv_path: Path, line: int) -> str:
    if PureWindowsPath(name).is_absolute() or PurePosixPath(name).is_absolute():
        try:
            return Path(name).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            raise DataError(
                f"line {line}: image path {name!r} is outside the root folder {root}", path=csv_path
            ) from None
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DataError(f"line {line}: image path {name!r} leaves the root folder", path=csv_path)
    return "/".join(parts)


def read_rows(csv_path: Path, root: Path) -> list[Row]:
    """The CSV's rows as parser rows; a one-line DataError for a malformed file or value."""
    if not csv_path.is_file():
        raise DataError("score CSV not found (expected name,score[,std] per line)", path=csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            text = handle.read()
        lines = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text), delimiter=separator(text)), start=1)]
    except UnicodeDecodeError:
        raise DataError("is not a UTF-8 text file", path=csv_path) from None
    except csv.Error as exc:
        raise DataError(f"is not a valid CSV file ({exc})", path=csv_path) from None
    lines = [(n, [c.strip() for c in row]) for n, row in lines if any(c.strip() for c in row)]
    lines = [(n, row) for n, row in lines if not row[0].startswith("#")]
    if not lines:
        raise DataError("lists no images (expected name,score[,std] per line)", path=csv_path)
    name_col, score_col = 0, 1
    std_col: int | None = 2
    first = lines[0][1]
    # The first row is a header only when none of its cells is a number and it names a known column
    # (name/score/std spellings). Anything else is data, so `img1.png,good` is reported as a malformed
    # score instead of being dropped silently as a "header".
    known = {c.lower() for c in first} & {*NAME_COLUMNS, *SCORE_COLUMNS, *STD_COLUMNS}
    header = not any(_is_number(c) for c in first) and bool(known)
    width, expected = 3, "name,score[,std]"
    if header:
        name_col, score_col, std_col = _columns(first)
        width, expected = len(first), f"the header's {len(first)}"
        lines = lines[1:]
    rows: list[Row] = []
    seen: dict[str, int] = {}
    for number, row in lines:
        if len(row) <= max(name_col, score_col):
            raise DataError(
                f"line {number} has {len(row)} column(s), expected name,score[,std] (cells separated by ',', a tab "
                "or ';', the first line's separator)",
                path=csv_path,
            )
        if any(row[width:]):
            # A cell beyond the header (or beyond name,score,std) is most often a decimal comma: `a.png,3,75`
            # would otherwise store 3 as the score and 75 as its std.
            raise DataError(
                f"line {number} has {len(row)} columns, expected {expected} (a decimal comma? write numbers with '.')",
                path=csv_path,
            )
        name = _relative(row[name_col], root, csv_path, number)
        if not name:
            raise DataError(f"line {number} has an empty image name", path=csv_path)
        key = name.lower()
        if key in seen:
            raise DataError(f"line {number} lists image {name!r} again (first on line {seen[key]})", path=csv_path)
        seen[key] = number
        score = to_score(row[score_col], source=csv_path, where=f"line {number}")
        std = math.nan
        if std_col is not None and std_col < len(row) and row[std_col]:
            std = to_score(row[std_col], source=csv_path, where=f"line {number}", what="std")
        rows.append(Row(relative=name, score=score, std=std))
    if not rows:
        raise DataError("lists no images below its header row", path=csv_path)
    if not header and all(_whole_number_pair(row) for _, row in lines):
        # `a.png,3,75` on every line: scores written with a decimal comma read as integer score and std.
        raise DataError(
            "every line has a whole-number score and std, as a decimal comma would make them (3,75 for 3.75): "
            "write numbers with '.', or add a header row name,score,std",
            path=csv_path,
        )
    return rows


def separator(text: str) -> str:
    """The cell separator: ',' unless the first line that holds anything has none but a tab or a ';'."""
    first = next((line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")), "")
    if "," in first:
        return ","
    # A decimal comma in a ';' file stays one cell ("3,75") and is refused as a score, never read as 3.
    return next((candidate for candidate in ("\t", ";") if candidate in first), ",")


def _whole_number_pair(row: list[str]) -> bool:
    return len(row) >= 3 and all(cell.lstrip("+-").isdigit() for cell in row[1:3])


def default_csv(root: Path) -> Path:
    """The only .csv file directly inside `root`."""
    found = sorted(p for p in Path(root).iterdir() if p.is_file() and p.suffix.lower() == ".csv")
    if len(found) != 1:
        what = "no .csv file" if not found else f"{len(found)} .csv files"
        raise DataError(f"{what} at the top of the folder; pass --csv FILE", path=root)
    return found[0]


def parse(root: Path, *, on_missing: OnMissing = None, csv_path: Path | None = None) -> list[Record]:
    root = check_root(root)
    csv_path = Path(csv_path).expanduser() if csv_path is not None else default_csv(root)
    rows = read_rows(csv_path, root)
    return build_records(rows, dataset_root=root, metadata=csv_path, on_missing=on_missing)


def check_name(name: str) -> str:
    """A custom dataset's name becomes a file name and a `--data` name: keep it simple and unambiguous."""
    from iqa_cli.data.datasets import is_dataset_name

    if not _SAFE_NAME.match(name):
        raise ConfigError(f"invalid dataset name {name!r} (letters, digits, '.', '_', '-'; at most 64 characters)")
    if name.lower() != "custom" and is_dataset_name(name):
        raise ConfigError(f"'{name}' is the name of a built-in dataset; choose another --name")
    return name


def _check_stds(rows: list[Row], csv_path: Path, low: float, high: float, given: bool) -> None:
    """A std wider than the whole score range is no rating spread: most often `a.png,3,75` read as score 3, std 75."""
    if high <= low or any(not low <= row.score <= high for row in rows):
        return  # one distinct score, or scores off the declared range: refused as such when the cache is written
    for row in rows:
        if row.std > high - low:
            scale = "the declared range" if given else "the range of all scores"
            raise DataError(
                f"image '{row.relative}' has score std {row.std:g}, more than {scale} {low:g} to {high:g} "
                "(a decimal comma or a wrong column? declare the rating scale with --range LO,HI)",
                path=csv_path,
            )


def make_spec(
    name: str,
    csv_path: Path,
    *,
    root: Path,
    score_type: str = "MOS",
    native_range: tuple[float, float] | None = None,
    lower_better: bool = False,
    default_resize: str = "none",
) -> DatasetSpec:
    """The spec of one custom dataset; `native_range` defaults to the observed min and max score."""
    name = check_name(name)
    csv_path = Path(csv_path).expanduser()
    given = native_range is not None
    rows = read_rows(csv_path, check_root(root))
    if native_range is None:
        native_range = (min(row.score for row in rows), max(row.score for row in rows))
    low, high = (float(v) for v in native_range)
    if not (math.isfinite(low) and math.isfinite(high)) or low > high or (given and low == high):
        raise ConfigError(f"--range: score range {low:g},{high:g} is empty (expected LO,HI with LO < HI)")
    _check_stds(rows, csv_path, low, high, given)
    return DatasetSpec(
        name=name,
        title=f"custom dataset '{name}' ({csv_path.name})",
        parse=functools.partial(parse, csv_path=csv_path),
        score_type=score_type,
        native_range=(low, high),
        lower_better=lower_better,
        default_resize=default_resize,
        expects=(csv_path.name,),
    )


SPEC = DatasetSpec(
    name="custom",
    title="Your own images: any folder plus a CSV of name,score[,std]",
    parse=parse,
    score_type="MOS",
    native_range=(math.nan, math.nan),  # declared per dataset (--range) or observed
    lower_better=False,
    default_resize="none",
    expects=("<any>.csv with name,score[,std] (header optional)", "the images it names, below --root"),
)
