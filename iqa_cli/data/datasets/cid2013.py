"""CID2013, the Camera Image Database (474 images in 6 image sets).

Layout: `CID2013 data - version 12112014.xlsx` (sheet `CID2013 MOS`; its header row is located by
the `Source_ID` cell) and images `IS1/co1/IS_I_C01_D01.jpg ...` whose scene folders are not
contiguous (`IS5/co8`). `Source_ID` may or may not carry a folder prefix, so images are matched by
file stem after a recursive scan. Score: the `Realigned MOS` column (about -10..90; can be
negative), no std.

Order for the authors' splits: the esnthere CID2013 prep script is not published; `authors_prep`,
`shuffle_4` and `ieit_chain_2` use the sheet's row order (inferred, not verified).
"""

from __future__ import annotations

import re
from pathlib import Path

from iqa_cli.data.datasets._files import (
    OnMissing,
    cell_text,
    check_root,
    find_file,
    read_xlsx_table,
    relative_name,
    report_missing,
    to_score,
    walk_dirs,
)
from iqa_cli.data.records import DatasetSpec, Record
from iqa_cli.errors import DataError

SCORES_FILE = "CID2013 data - version 12112014.xlsx"
SHEET = "CID2013 MOS"
IMAGE_SUFFIXES = (".jpg", ".jpeg")
# Other releases of the spreadsheet carry another date in the name.
_OTHER_VERSION = re.compile(r"^cid2013 data.*\.xlsx$", re.IGNORECASE)


def _images_by_stem(dataset_root: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for _, _, entries in walk_dirs(dataset_root, 3):
        for entry in entries:
            stem, dot, suffix = entry.name.rpartition(".")
            if dot and f".{suffix.lower()}" in IMAGE_SUFFIXES and entry.is_file():
                index.setdefault(stem.lower(), Path(entry.path))
    return index


def parse(root: Path, *, on_missing: OnMissing = None) -> list[Record]:
    root = check_root(root)
    xlsx = find_file(root, [SCORES_FILE], match=lambda n: bool(_OTHER_VERSION.match(n)))
    dataset_root = xlsx.parent
    table = read_xlsx_table(xlsx, sheet=SHEET, header="Source_ID", required=["Source_ID", "Realigned MOS"])
    images = _images_by_stem(dataset_root)
    records: list[Record] = []
    for number, values in table.rows:
        where = f"sheet {SHEET!r} row {number}"
        source_id = cell_text(values["source_id"]).replace("\\", "/")
        if not source_id:
            raise DataError(f"{where}: empty Source_ID", path=xlsx)
        stem = source_id.rsplit("/", 1)[-1]
        if stem.lower().endswith(IMAGE_SUFFIXES):
            stem = stem.rsplit(".", 1)[0]
        score = to_score(values["realigned mos"], source=xlsx, where=where)
        path = images.get(stem.lower())
        if path is None:
            report_missing(f"{stem}.jpg", expected=None, searched=dataset_root, metadata=xlsx, on_missing=on_missing)
            continue
        records.append(Record(path=path, name=relative_name(path, dataset_root), score=score))
    if not table.rows:
        raise DataError(f"sheet {SHEET!r} lists no images", path=xlsx)
    return records


SPEC = DatasetSpec(
    name="cid2013",
    title="CID2013 camera image database (474 images)",
    parse=parse,
    score_type="MOS",
    native_range=(-10.0, 90.0),
    lower_better=False,
    default_resize="short:768",
    expects=(f"{SCORES_FILE} (sheet '{SHEET}')", "IS1/ ... IS6/ scene folders"),
    aliases=("cid",),
)
