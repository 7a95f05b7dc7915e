"""BID, the Blurred Image Database of Ciancio et al. (2011), 586 photos.

Layout: `DatabaseGrades.xlsx` (sheet `Plan1`, header `Image Number`, `Average Subjective Grade`, ...)
and `DatabaseImage0001.JPG ... DatabaseImage0586.JPG`, either beside the .xlsx or in a sub-folder
(usually `ImageDatabase/`). Rows are keyed by `Image Number`, never by position, and kept in sheet
order. Score: MOS on 0-5. The std column's header is not documented; a column whose header says
`std` / `standard deviation` / `desvio` is used when present, otherwise std is unknown (NaN).
"""

from __future__ import annotations

import math
from pathlib import Path

from iqa_cli.data.datasets._files import (
    OnMissing,
    check_root,
    file_index,
    find_file,
    fold,
    read_xlsx_table,
    relative_name,
    report_missing,
    show,
    to_score,
)
from iqa_cli.data.records import DatasetSpec, Record
from iqa_cli.errors import DataError

GRADES_FILE = "DatabaseGrades.xlsx"
SHEET = "Plan1"
IMAGE_PATTERN = "DatabaseImage{:04d}.JPG"
STD_HEADER_WORDS = ("std", "standard deviation", "desvio")


def _std_column(headers: tuple[str, ...]) -> str | None:
    for header in headers:
        words = header.replace("_", " ").replace(".", " ")
        if any(w == header or f" {w}" in f" {words}" for w in STD_HEADER_WORDS):
            return header
    return None


def parse_grades(root: Path, *, on_missing: OnMissing = None) -> list[Record]:
    """Parse the BID layout under `root` (also used by the `rbid` dataset)."""
    root = check_root(root)
    xlsx = find_file(root, [GRADES_FILE])
    dataset_root = xlsx.parent
    table = read_xlsx_table(
        xlsx, sheet=SHEET, header="Image Number", required=["Image Number", "Average Subjective Grade"]
    )
    std_column = _std_column(table.headers)
    index = file_index(dataset_root, 2)  # flat, ImageDatabase/, or a doubled folder
    records: list[Record] = []
    seen: set[int] = set()
    for number, values in table.rows:
        where = f"sheet {SHEET!r} row {number}"
        image_number = to_score(values["image number"], source=xlsx, where=where, what="Image Number")
        if not image_number.is_integer() or image_number < 1:
            raise DataError(
                f"{where}: Image Number {show(values['image number'])} is not a positive integer", path=xlsx
            )
        if int(image_number) in seen:
            raise DataError(f"{where}: Image Number {int(image_number)} appears twice", path=xlsx)
        seen.add(int(image_number))
        file_name = IMAGE_PATTERN.format(int(image_number))
        score = to_score(values["average subjective grade"], source=xlsx, where=where)
        std = to_score(values[std_column], source=xlsx, where=where, what="std") if std_column else math.nan
        path = index.get(fold(file_name))
        if path is None:
            report_missing(file_name, expected=None, searched=dataset_root, metadata=xlsx, on_missing=on_missing)
            continue
        records.append(Record(path=path, name=relative_name(path, dataset_root), score=score, std=std))
    if not table.rows:
        raise DataError(f"sheet {SHEET!r} lists no images", path=xlsx)
    return records


def parse(root: Path, *, on_missing: OnMissing = None) -> list[Record]:
    return parse_grades(root, on_missing=on_missing)


SPEC = DatasetSpec(
    name="bid",
    title="BID blurred image database (586 photos)",
    parse=parse,
    score_type="MOS",
    native_range=(0.0, 5.0),
    lower_better=False,
    default_resize="short:768",
    expects=(GRADES_FILE + " (sheet Plan1)", "DatabaseImage0001.JPG ... (beside it or in ImageDatabase/)"),
    aliases=("bid2011",),
)
