"""RBID, the "Real Blur Image Database" as used by the VT-IQA/IEIT/KG-IQA authors.

No official RBID metadata file is known. Two layouts are accepted, in this order:

1. The authors' `RBID_mos.mat` with an `Image/` folder beside it: `RBID_str` holds the file names
   (a char matrix, one padded name per row, or a cell array) and `RBID_mos` is an N x k matrix whose
   column 0 is the 1-based index of the row's name in `RBID_str` and column 1 the MOS (0-5; the
   authors map it to 1-5 with `Y*0.8 + 1`). The meaning of further columns is undocumented, so std
   is left unknown. Rows keep the matrix order.
2. Otherwise the BID layout (`DatabaseGrades.xlsx` + `DatabaseImage####.JPG`): the RBID of the
   literature is most likely the same photo set as BID (Ciancio et al. 2011).

Order for the authors' splits: rows keep the order of the authors' `RBID_mos.mat` (their own file),
so `authors_prep`, `shuffle_2` and `ieit_chain_0` replay their calls on that order when the file is
given; with the BID layout the order is BID's sheet order (inferred).
"""

from __future__ import annotations

from pathlib import Path

from iqa_cli.data.datasets._files import (
    CaseInsensitiveTree,
    OnMissing,
    Row,
    build_records,
    check_root,
    find_file,
    load_mat,
    mat_matrix,
    mat_strings,
    show,
    to_score,
)
from iqa_cli.data.datasets.bid import GRADES_FILE, parse_grades
from iqa_cli.data.records import DatasetSpec, Record
from iqa_cli.errors import DataError

MAT_FILE = "RBID_mos.mat"
IMAGE_FOLDER = "Image"


def _parse_mat(mat_path: Path, on_missing: OnMissing) -> list[Record]:
    dataset_root = mat_path.parent
    content = load_mat(mat_path, ["RBID_mos", "RBID_str"])
    names = mat_strings(content["RBID_str"], path=mat_path, variable="RBID_str")
    table = mat_matrix(content["RBID_mos"], path=mat_path, variable="RBID_mos")
    if table.shape[1] < 2:
        raise DataError(f"RBID_mos has {table.shape[1]} column(s); expected index and MOS columns", path=mat_path)
    if table.shape[0] != len(names):
        raise DataError(
            f"metadata lengths differ (RBID_mos={table.shape[0]}, RBID_str={len(names)}); expected one entry per image",
            path=mat_path,
        )
    image_dir = CaseInsensitiveTree(dataset_root).child(dataset_root, IMAGE_FOLDER)
    if image_dir is None or not image_dir.is_dir():
        raise DataError(f"image folder '{IMAGE_FOLDER}/' not found beside {MAT_FILE}", path=dataset_root)
    rows = []
    for i, (index, mos) in enumerate(table[:, :2], start=1):
        where = f"RBID_mos row {i}"
        if not (index.is_integer() and 1 <= index <= len(names)):
            raise DataError(f"{where}: name index {show(index)} is outside 1..{len(names)}", path=mat_path)
        name = names[int(index) - 1]
        if not name:
            raise DataError(f"{where}: RBID_str entry {int(index)} is empty", path=mat_path)
        rows.append(Row(relative=f"{image_dir.name}/{name}", score=to_score(mos, source=mat_path, where=where)))
    return build_records(rows, dataset_root=dataset_root, metadata=mat_path, on_missing=on_missing)


def parse(root: Path, *, on_missing: OnMissing = None) -> list[Record]:
    root = check_root(root)
    mat_path = find_file(root, [MAT_FILE], required=False)
    if mat_path is not None:
        return _parse_mat(mat_path, on_missing)
    if find_file(root, [GRADES_FILE], required=False) is None:
        raise DataError(f"metadata file '{MAT_FILE}' (or BID's '{GRADES_FILE}') not found", path=root)
    return parse_grades(root, on_missing=on_missing)


SPEC = DatasetSpec(
    name="rbid",
    title="RBID real-blur images (authors' RBID_mos.mat, or the BID layout)",
    parse=parse,
    score_type="MOS",
    native_range=(0.0, 5.0),
    lower_better=False,
    default_resize="short:768",
    expects=(f"{MAT_FILE} + {IMAGE_FOLDER}/", f"or BID's {GRADES_FILE} + DatabaseImage####.JPG"),
)
