"""Your own images: any folder plus a CSV of `name,score[,std]`.

Cells are separated by commas; a file whose first line has no comma but a tab (a TSV) or a semicolon
(a spreadsheet's export in many locales) is read with that separator.

The CSV's header row is optional. Without one, the columns are name, score and (optionally) std. A
first row counts as a header only when no cell is a number and at least one names a known column.
With one, the columns are found by name: exactly one score column (score/mos/dmos/quality/...), at
most one std column (std/sd/...), and the name column (name/image/file/path/..., else the first). A
header that names several score columns (`MOS,DMOS`, `MOS,MOS_zscore`) or none is refused: taking
one by position or by a preference order would train on a column nobody chose. `columns` (the
CLI's `--columns NAME,SCORE[,STD]`) names them instead. Image names are paths relative to the
dataset root ('/' or '\\' separators); they are matched case-insensitively when the exact spelling
is not on disk. Blank lines and lines starting with '#' are ignored.

A set of distortions of a few references (a `ref_img` column, as KADID-10k's) is split by reference when
`references` names that column (`--references`): otherwise the splits are drawn over images and one
scene's distortions sit on both sides, so a header column named like a reference that nothing reads
gets a warning. A reference value that names a file below the root keeps that file's digest, so a
model that saw the reference counts its distortions as seen.

Scores are higher-better unless declared lower-better. A score column or `score_type` named MOS
refuses lower-better, and one named DMOS needs the direction declared either way (`check_direction`):
a scale read the wrong way round trains every model upside down, and nothing downstream could tell.

`make_spec` builds the `DatasetSpec` for one such dataset: its name (used for the cache file and
its attributes), score type, direction and declared range (default: the observed min and max).
The registered `SPEC` parses the only .csv file at the top of the root folder.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath, PureWindowsPath

from iqa_cli.data.datasets._files import OnMissing, Row, build_records, check_root, fold, parse_number, to_score
from iqa_cli.data.records import LEVEL_SCORES, DatasetSpec, Record
from iqa_cli.errors import ConfigError, DataError
from iqa_cli.textlist import comma_list
from iqa_cli.usertext import read_user_text

log = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class Columns:
    """Where name, score and std sit in each row; `score_header` is the score column's header cell (None
    without a header row)."""

    name: int = 0
    score: int = 1
    std: int | None = 2
    score_header: str | None = None
    reference: int | None = None  # the column naming each image's reference (`references`), if any


def _named_columns(header: list[str], columns: list[str], csv_path: Path) -> Columns:
    """The columns `--columns NAME,SCORE[,STD]` names, found in the header row (case-insensitive)."""
    lower = [h.lower() for h in header]
    found = []
    for wanted in columns:
        if lower.count(wanted.lower()) != 1:
            what = "no" if wanted.lower() not in lower else "more than one"
            raise DataError(
                f"--columns: the header row has {what} column {wanted!r} (its columns: {', '.join(header)})",
                path=csv_path,
            )
        found.append(lower.index(wanted.lower()))
    if len(set(found)) != len(found):
        raise ConfigError(f"--columns: {','.join(columns)} names one column twice")
    return Columns(found[0], found[1], found[2] if len(found) > 2 else None, score_header=header[found[1]])


def _header_columns(header: list[str], csv_path: Path) -> Columns:
    """The columns a header row names; an ambiguous or missing score column is refused."""
    lower = [h.lower() for h in header]

    def matches(candidates: tuple[str, ...], what: str, hint: str) -> list[int]:
        hits = [i for i, h in enumerate(lower) if h in candidates]
        if len(hits) > 1:
            names = ", ".join(header[i] for i in hits)
            raise DataError(
                f"the header row names {len(hits)} {what} columns ({names}): choose one with "
                f"--columns NAME,SCORE[,STD]{hint}",
                path=csv_path,
            )
        return hits

    scores = matches(SCORE_COLUMNS, "score", " (e.g. a MOS or a DMOS column, not both)")
    if not scores:
        raise DataError(
            f"the header row ({', '.join(header)}) names no score column (expected one of "
            f"{', '.join(SCORE_COLUMNS)}): name the columns with --columns NAME,SCORE[,STD]",
            path=csv_path,
        )
    stds = matches(STD_COLUMNS, "std", "")
    names = matches(NAME_COLUMNS, "image name", "")
    name = names[0] if names else 0
    if name in (scores[0], *stds):
        raise DataError(
            f"the header row ({', '.join(header)}) names no image name column (expected one of "
            f"{', '.join(NAME_COLUMNS)}): name the columns with --columns NAME,SCORE[,STD]",
            path=csv_path,
        )
    return Columns(name, scores[0], stds[0] if stds else None, score_header=header[scores[0]])


def _is_absolute(name: str) -> bool:
    return PureWindowsPath(name).is_absolute() or PurePosixPath(name).is_absolute()


def _below_root(name: str, root: Path) -> str | None:
    """`name` as a '/'-separated path below `root` (an absolute path inside it made relative, '\\' read as
    '/'), or None when it points outside `root`."""
    if _is_absolute(name):
        try:
            return Path(name).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            return None
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return None if ".." in parts else "/".join(parts)


def _relative(name: str, root: Path, csv_path: Path, line: int) -> str:
    relative = _below_root(name, root)
    if relative is None:
        where = f"is outside the root folder {root}" if _is_absolute(name) else "leaves the root folder"
        raise DataError(f"line {line}: image path {name!r} {where}", path=csv_path)
    return relative


def read_table(
    csv_path: Path,
    root: Path,
    columns: list[str] | None = None,
    references: str | None = None,
    *,
    warn: bool = False,
) -> tuple[list[Row], Columns]:
    """The CSV's rows (a one-line DataError for a malformed file or value) and where their cells were read
    from; `columns` names the header's columns (NAME,SCORE[,STD]) instead of finding them by their names,
    `references` the header column that names each image's reference. `warn`: say what the header holds
    that nothing reads (once per dataset: `make_spec` reads the table before `parse` does)."""
    if columns is not None and len(columns) not in (2, 3):
        raise ConfigError(f"--columns: expected NAME,SCORE[,STD] (2 or 3 header names), got {','.join(columns)!r}")
    if not csv_path.is_file():
        raise DataError("score CSV not found (expected name,score[,std] per line)", path=csv_path)
    text = read_user_text(csv_path)
    try:
        lines = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text), delimiter=separator(text)), start=1)]
    except csv.Error as exc:
        raise DataError(f"is not a valid CSV file ({_csv_problem(exc)})", path=csv_path) from None
    lines = [(n, [c.strip() for c in row]) for n, row in lines if any(c.strip() for c in row)]
    lines = [(n, row) for n, row in lines if not row[0].startswith("#")]
    if not lines:
        raise DataError("lists no images (expected name,score[,std] per line)", path=csv_path)
    place = Columns()
    first = lines[0][1]
    # The first row is a header only when none of its cells is a number and it names a known column
    # (name/score/std spellings). Anything else is data, so `img1.png,good` is reported as a malformed
    # score instead of being dropped silently as a "header".
    known = {c.lower() for c in first} & {*NAME_COLUMNS, *SCORE_COLUMNS, *STD_COLUMNS}
    header = not any(_is_number(c) for c in first) and (bool(known) or columns is not None or references is not None)
    width, expected = 3, "name,score[,std]"
    if columns is not None and not header:
        raise DataError(f"--columns names header columns, but line {lines[0][0]} is no header row", path=csv_path)
    if references is not None and not header:
        raise DataError(f"--references names a header column, but line {lines[0][0]} is no header row", path=csv_path)
    if header:
        place = _named_columns(first, columns, csv_path) if columns is not None else _header_columns(first, csv_path)
        if references is not None:
            place = replace(place, reference=_reference_column(first, references, place, csv_path))
        elif warn:
            _warn_unread_reference_column(first, place, csv_path)
        width, expected = len(first), f"the header's {len(first)}"
        lines = lines[1:]
    name_col, score_col, std_col = place.name, place.score, place.std
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
        key = fold(name)
        if key in seen:
            raise DataError(f"line {number} lists image {name!r} again (first on line {seen[key]})", path=csv_path)
        seen[key] = number
        score = to_score(row[score_col], source=csv_path, where=f"line {number}")
        std = math.nan
        if std_col is not None and std_col < len(row) and row[std_col]:
            std = to_score(row[std_col], source=csv_path, where=f"line {number}", what="std")
        ref_key = reference = None
        if place.reference is not None:
            ref_key = row[place.reference] if place.reference < len(row) else ""
            if not ref_key:
                raise DataError(
                    f"line {number} names no reference in column {first[place.reference]!r} (--references)",
                    path=csv_path,
                )
            reference = _below_root(ref_key, root) or None  # a file's digest is kept when it is there
        rows.append(Row(relative=name, score=score, std=std, ref_key=ref_key, reference=reference))
    if not rows:
        raise DataError("lists no images below its header row", path=csv_path)
    if not header and all(_whole_number_pair(row) for _, row in lines):
        # `a.png,3,75` on every line: scores written with a decimal comma read as integer score and std.
        raise DataError(
            "every line has a whole-number score and std, as a decimal comma would make them (3,75 for 3.75): "
            "write numbers with '.', or add a header row name,score,std",
            path=csv_path,
        )
    return rows, place


# Header words that name an image's reference (KADID-10k's `ref_img`, a `reference` or `pristine` column):
# a column so named that nothing reads is worth a word. Vaguer words (`source`, `original`) are left out:
# CID2013's `Source_ID` is the image's own id.
_REFERENCE_WORDS = ("ref", "refs", "reference", "references", "refimg", "refimage", "refname", "pristine")


def _reference_column(header: list[str], wanted: str, place: Columns, csv_path: Path) -> int:
    lower = [h.lower() for h in header]
    if lower.count(wanted.lower()) != 1:
        what = "no" if wanted.lower() not in lower else "more than one"
        raise DataError(
            f"--references: the header row has {what} column {wanted!r} (its columns: {', '.join(header)})",
            path=csv_path,
        )
    index = lower.index(wanted.lower())
    if index in (place.name, place.score, place.std):
        raise ConfigError(f"--references: {wanted!r} is the image name, score or std column")
    return index


def _warn_unread_reference_column(header: list[str], place: Columns, csv_path: Path) -> None:
    """Images of one reference on both sides of a split let a model be tested on scenes it trained on."""
    for index, cell in enumerate(header):
        if index in (place.name, place.score, place.std):
            continue
        words = set(re.split(r"[^a-z0-9]+", cell.lower())) | {cell.lower().replace("_", "")}
        if words & set(_REFERENCE_WORDS):
            log.warning(
                f"{csv_path}: column {cell!r} looks like each image's reference, which iqa does not read unless "
                f"told: splits are drawn over images, so distortions of one scene can sit on both sides; pass "
                f"--references {cell} for splits that keep each reference on one side"
            )
            return


def _csv_problem(exc: csv.Error) -> str:
    """The csv module's complaint, in the file's terms (its own advice is about Python's `open`)."""
    text = str(exc)
    if "new-line character seen in unquoted field" in text:
        return "a carriage return inside a line: a file of mixed Windows and Mac line endings?"
    return text


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


def parse(
    root: Path,
    *,
    on_missing: OnMissing = None,
    csv_path: Path | None = None,
    columns: list[str] | None = None,
    references: str | None = None,
) -> list[Record]:
    root = check_root(root)
    csv_path = Path(csv_path).expanduser() if csv_path is not None else default_csv(root)
    rows, _ = read_table(csv_path, root, columns, references)
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


# Score kinds whose name says their direction: a MOS rises with quality, a DMOS (difference MOS) falls.
_HIGHER_BETTER = ("mos", "mos_zscore")
_LOWER_BETTER = ("dmos",)


def check_direction(
    score_type: str | None, lower_better: bool | None, place: Columns, csv_path: Path
) -> tuple[str, bool]:
    """(score type to record, lower_better). A scale named MOS (by `score_type` or by the score column's
    name) rises with quality, so declaring it lower-better is refused. One named DMOS usually falls with
    quality, but not always (KADID-10k's `dmos` column rises), so its direction must be declared
    (`lower_better` True or False, not None). The score type defaults to DMOS or MOS by the direction."""
    if score_type is not None and score_type.strip().lower() == LEVEL_SCORES:
        raise ConfigError(
            f"--score-type {score_type}: reserved for `iqa prepare distorted` caches (distortion levels, which no "
            "quality method trains on); name your scale another way (MOS, DMOS, rating, ...)"
        )
    kind = (score_type or "").strip().lower()
    header = (place.score_header or "").lower()
    named = [
        (f"--score-type {score_type}", kind, None),
        (f"the score column {place.score_header!r}", header, csv_path),
    ]
    for what, label, where in named:
        if label in _HIGHER_BETTER and lower_better:
            raise ConfigError(
                f"{what} names a MOS, which rises with quality, but --lower-better declares lower scores better: leave "
                "out --lower-better (or name the scale otherwise, or pick another column with --columns)",
                path=where,
            )
        if label in _LOWER_BETTER and lower_better is None:
            raise ConfigError(
                f"{what} names a DMOS: declare its direction with --lower-better (a difference MOS, lower scores are "
                "better) or --higher-better (some datasets' 'dmos' rises with quality, as KADID-10k's does)",
                path=where,
            )
    if lower_better is None and not any(label in _HIGHER_BETTER for _, label, _ in named):
        # Read as a MOS by default; a DMOS exported under a plain name would train quality upside down.
        shown = f"the score column {place.score_header!r}" if place.score_header else "the score column"
        log.warning(
            f"{csv_path}: {shown} does not say which way it runs: read as higher-is-better (a MOS); pass "
            "--lower-better if lower scores are better (a DMOS), or --higher-better to say so"
        )
    resolved = bool(lower_better)
    return (score_type.strip() if score_type and score_type.strip() else ("DMOS" if resolved else "MOS")), resolved


def make_spec(
    name: str,
    csv_path: Path | None,
    *,
    root: Path,
    score_type: str | None = None,
    native_range: tuple[float, float] | None = None,
    lower_better: bool | None = None,
    default_resize: str = "none",
    columns: str | Sequence[str] | None = None,
    references: str | None = None,
) -> DatasetSpec:
    """The spec of one custom dataset. `csv_path` defaults to the only .csv at the top of `root`;
    `native_range` to the observed min and max score; `lower_better` (None: not declared) to
    higher-better where no DMOS name asks for a declaration; `score_type` to DMOS or MOS by the
    direction. `columns` names the header's NAME,SCORE[,STD] (a list, or that text); `references` the
    header column naming each image's reference: the splits then keep each reference's images on one
    side, and a value that names a file below `root` has its digest kept (`reference_digests`)."""
    name = check_name(name)
    root = check_root(root)
    csv_path = Path(csv_path).expanduser() if csv_path is not None else default_csv(root)
    if isinstance(columns, str):
        columns = comma_list(columns, "--columns")
    columns = list(columns) if columns is not None else None
    given = native_range is not None
    if references is not None and not references.strip():
        raise ConfigError("--references: expected a header column name, got an empty value")
    references = references.strip() if references is not None else None
    rows, place = read_table(csv_path, root, columns, references, warn=True)
    score_type, lower_better = check_direction(score_type, lower_better, place, csv_path)
    if native_range is None:
        native_range = (min(row.score for row in rows), max(row.score for row in rows))
        log.info(
            f"note: no --range: the observed scores {native_range[0]:g}..{native_range[1]:g} are recorded as the "
            "scale's range, which the 1-5 training labels are mapped from; give --range LO,HI for the scale's bounds"
        )
    low, high = (float(v) for v in native_range)
    if not (math.isfinite(low) and math.isfinite(high)) or low > high or (given and low == high):
        raise ConfigError(f"--range: score range {low:g},{high:g} is empty (expected LO,HI with LO < HI)")
    _check_stds(rows, csv_path, low, high, given)
    return DatasetSpec(
        name=name,
        title=f"custom dataset '{name}' ({csv_path.name})",
        parse=functools.partial(parse, csv_path=csv_path, columns=columns, references=references),
        score_type=score_type,
        native_range=(low, high),
        lower_better=lower_better,
        default_resize=default_resize,
        reference_disjoint=references is not None,
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
