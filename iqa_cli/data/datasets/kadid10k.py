"""KADID-10k (10,125 distorted images of 81 references).

Layout: `dmos.csv` with header `dist_img,ref_img,dmos,var` and `images/` holding both the references
`I01.png ...` and the distorted `I01_01_01.png ...`. The CSV normally sits beside `images/`; a copy
inside `images/` is accepted too. Score: the `dmos` column, which despite its name is a MOS on 1-5,
higher is better. Std: `sqrt(var)`, since the column is a variance by its name. `ref_id` numbers the
`ref_img` values in order of first appearance.

Order for the authors' splits: VIPNet's loader indexes `np.unique(ref_img)`, the 81 reference names
sorted; `vipnet_K` groups images by the `I01` prefix of their names and sorts those (the same order,
whatever order the CSV rows have). The esnthere methods did not use KADID-10k. SSL-IQA's KADID-10k
split files are not public.
"""

from __future__ import annotations

import math
from pathlib import Path

from iqa_cli.data.datasets._files import (
    CaseInsensitiveTree,
    OnMissing,
    Row,
    build_records,
    check_root,
    find_file,
    read_csv_table,
    to_score,
)
from iqa_cli.data.records import DatasetSpec, Record
from iqa_cli.errors import DataError

SCORES_FILE = "dmos.csv"
IMAGE_FOLDER = "images"


def parse(root: Path, *, on_missing: OnMissing = None) -> list[Record]:
    root = check_root(root)
    csv_path = find_file(root, [SCORES_FILE])
    csv_dir = csv_path.parent
    image_dir = CaseInsensitiveTree(csv_dir).child(csv_dir, IMAGE_FOLDER)
    if image_dir is not None and image_dir.is_dir():
        dataset_root, prefix = csv_dir, f"{image_dir.name}/"
    elif csv_dir.name.lower() == IMAGE_FOLDER:
        dataset_root, prefix = csv_dir.parent, f"{csv_dir.name}/"
    else:
        raise DataError(f"image folder '{IMAGE_FOLDER}/' not found beside {SCORES_FILE}", path=csv_dir)
    rows = []
    for line, row in read_csv_table(csv_path, ["dist_img", "ref_img", "dmos", "var"]):
        if not row["dist_img"] or not row["ref_img"]:
            raise DataError(f"line {line}: empty dist_img or ref_img", path=csv_path)
        variance = to_score(row["var"], source=csv_path, where=f"line {line}", what="var")
        if variance < 0:
            raise DataError(f"line {line}: negative variance {row['var']!r}", path=csv_path)
        rows.append(
            Row(
                relative=prefix + row["dist_img"],
                score=to_score(row["dmos"], source=csv_path, where=f"line {line}"),
                std=math.sqrt(variance),
                ref_key=row["ref_img"].lower(),
                reference=prefix + row["ref_img"],
            )
        )
    if not rows:
        raise DataError("lists no images", path=csv_path)
    return build_records(rows, dataset_root=dataset_root, metadata=csv_path, on_missing=on_missing)


SPEC = DatasetSpec(
    name="kadid10k",
    title="KADID-10k synthetic distortions (10,125 images, 81 references)",
    parse=parse,
    score_type="MOS",
    native_range=(1.0, 5.0),
    lower_better=False,
    default_resize="none",
    reference_disjoint=True,
    expects=(SCORES_FILE, f"{IMAGE_FOLDER}/"),
    aliases=("kadid", "kadid-10k"),
)
