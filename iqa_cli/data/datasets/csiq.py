"""CSIQ (866 distorted images of 30 references).

Metadata: `csiq.DMOS.xlsx`, sheet `all_by_image`, whose header row (row 4, behind blank columns) is
located by its `image` cell; columns `image, dst_idx, dst_type, dst_lev, dmos_std, dmos`. Images:
`dst_imgs/<folder>/<image>.<TOKEN>.<level>.png`, with the folder and token per `dst_type` below.
Folder names differ in case between copies (`awgn/` vs `AWGN/`), so paths resolve
case-insensitively. Reference names that are numbers in Excel (1600) are read as text. Score:
DMOS on 0-1, lower is better, with `dmos_std`. `ref_id` numbers the `image` values in order of
first appearance.

Order for the authors' splits: VIPNet lists CSIQ's references with `os.listdir` (file-system order),
so its rounds cannot be replayed (`vipnet_K` refuses CSIQ; use the reference-disjoint `random_K`).
"""

from __future__ import annotations

from pathlib import Path

from iqa_cli.data.datasets._files import (
    OnMissing,
    Row,
    build_records,
    cell_text,
    check_root,
    find_file,
    read_xlsx_table,
    show,
    to_score,
)
from iqa_cli.data.records import DatasetSpec, Record
from iqa_cli.errors import DataError

SCORES_FILE = "csiq.DMOS.xlsx"
SHEET = "all_by_image"
IMAGE_FOLDER = "dst_imgs"
REFERENCE_FOLDER = "src_imgs"  # the 30 reference PNGs
# dst_type as written in the sheet -> (folder under dst_imgs/, type token in the file name)
DISTORTIONS = {
    "noise": ("awgn", "AWGN"),
    "awgn": ("awgn", "AWGN"),
    "blur": ("blur", "BLUR"),
    "contrast": ("contrast", "contrast"),
    "fnoise": ("fnoise", "fnoise"),
    "jpeg": ("jpeg", "JPEG"),
    "jpeg 2000": ("jpeg2000", "jpeg2000"),
    "jpeg2000": ("jpeg2000", "jpeg2000"),
}


def parse(root: Path, *, on_missing: OnMissing = None) -> list[Record]:
    root = check_root(root)
    xlsx = find_file(root, [SCORES_FILE])
    dataset_root = xlsx.parent
    table = read_xlsx_table(
        xlsx, sheet=SHEET, header="image", required=["image", "dst_type", "dst_lev", "dmos_std", "dmos"]
    )
    rows = []
    for number, values in table.rows:
        where = f"sheet {SHEET!r} row {number}"
        image = cell_text(values["image"])
        if not image:
            raise DataError(f"{where}: empty image", path=xlsx)
        dst_type = " ".join(cell_text(values["dst_type"]).lower().split())
        if dst_type not in DISTORTIONS:
            raise DataError(f"{where}: unknown dst_type {values['dst_type']!r}", path=xlsx)
        level = to_score(values["dst_lev"], source=xlsx, where=where, what="dst_lev")
        if not level.is_integer():
            raise DataError(f"{where}: dst_lev {show(values['dst_lev'])} is not an integer", path=xlsx)
        folder, token = DISTORTIONS[dst_type]
        rows.append(
            Row(
                relative=f"{IMAGE_FOLDER}/{folder}/{image}.{token}.{int(level)}.png",
                score=to_score(values["dmos"], source=xlsx, where=where),
                std=to_score(values["dmos_std"], source=xlsx, where=where, what="dmos_std"),
                ref_key=image.lower(),
                reference=f"{REFERENCE_FOLDER}/{image}.png",
            )
        )
    if not rows:
        raise DataError(f"sheet {SHEET!r} lists no images", path=xlsx)
    return build_records(rows, dataset_root=dataset_root, metadata=xlsx, on_missing=on_missing)


SPEC = DatasetSpec(
    name="csiq",
    title="CSIQ (866 distorted images, 30 references)",
    parse=parse,
    score_type="DMOS",
    native_range=(0.0, 1.0),
    lower_better=True,
    default_resize="none",
    reference_disjoint=True,
    expects=(f"{SCORES_FILE} (sheet {SHEET})", f"{IMAGE_FOLDER}/awgn/ blur/ contrast/ fnoise/ jpeg/ jpeg2000/"),
)
