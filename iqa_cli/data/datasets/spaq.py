"""SPAQ (Smartphone Photography Attribute and Quality), 11,125 photos.

Layout: `TestImage/00001.jpg ...` and `Annotations/MOS and Image attribute scores.xlsx` (first sheet,
header row with `Image name`, `MOS`, then five attribute columns). Some copies keep the .xlsx beside
`TestImage/` instead of in `Annotations/`; both are accepted. Score: MOS 0-100, no std. The photos
are full smartphone resolution, so the cache resizes the shorter side to 768 by default: enough for
VT-IQA's 768 px patch view without upscaling (the SPAQ authors' own model uses 512; `--short-side 512`
gives that, and a cache a little under half the size).

Order for the authors' splits: the esnthere SPAQ prep script is not published; `authors_prep`,
`shuffle_0` (the released VT-IQA model) and `ieit_chain_1` use the metadata (xlsx row) order, which
is inferred, not verified.
"""

from __future__ import annotations

from pathlib import Path

from iqa_cli.data.datasets._files import (
    CaseInsensitiveTree,
    OnMissing,
    Row,
    build_records,
    cell_text,
    check_root,
    find_file,
    read_xlsx_table,
    to_score,
)
from iqa_cli.data.records import DatasetSpec, Record
from iqa_cli.errors import DataError

SCORES_FILE = "MOS and Image attribute scores.xlsx"
IMAGE_FOLDER = "TestImage"


def parse(root: Path, *, on_missing: OnMissing = None) -> list[Record]:
    root = check_root(root)
    xlsx = find_file(root, [SCORES_FILE])
    # The dataset root holds TestImage/: the .xlsx sits in Annotations/ or right beside it.
    candidates = [xlsx.parent.parent, xlsx.parent] if xlsx.parent.name.lower() == "annotations" else [xlsx.parent]
    dataset_root = image_dir = None
    for candidate in candidates:
        tree = CaseInsensitiveTree(candidate)
        image_dir = tree.child(candidate, IMAGE_FOLDER)
        if image_dir is not None and image_dir.is_dir():
            dataset_root = candidate
            break
    if dataset_root is None or image_dir is None:
        raise DataError(
            f"image folder '{IMAGE_FOLDER}/' not found beside Annotations/ or {SCORES_FILE}", path=candidates[0]
        )
    table = read_xlsx_table(xlsx, sheet=None, header="Image name", required=["Image name", "MOS"])
    rows = []
    for number, values in table.rows:
        raw = values["image name"]
        # The sheet lists text like '00001.jpg'; a copy re-saved with the names as numbers still maps.
        name = f"{int(raw):05d}.jpg" if isinstance(raw, (int, float)) and float(raw).is_integer() else cell_text(raw)
        if not name:
            raise DataError(f"sheet {table.sheet!r} row {number}: empty 'Image name'", path=xlsx)
        rows.append(
            Row(
                relative=f"{image_dir.name}/{name}",
                score=to_score(values["mos"], source=xlsx, where=f"sheet {table.sheet!r} row {number}"),
            )
        )
    if not rows:
        raise DataError(f"sheet {table.sheet!r} lists no images", path=xlsx)
    return build_records(rows, dataset_root=dataset_root, metadata=xlsx, on_missing=on_missing)


SPEC = DatasetSpec(
    name="spaq",
    title="SPAQ smartphone photos (11,125 images)",
    parse=parse,
    score_type="MOS",
    native_range=(1.0, 100.0),
    lower_better=False,
    default_resize="short:768",
    expects=("TestImage/", f"Annotations/{SCORES_FILE}"),
)
