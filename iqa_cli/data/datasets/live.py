"""LIVE Image Quality Assessment Database, release 2 (`databaserelease2`, 779 distorted images).

Metadata: `refnames_all.mat` (`refnames_all`, a (1,982) cell of reference names) and DMOS from
`dmos_realigned.mat` (`dmos_new`, `dmos_std`, `orgs`) when present, else `dmos.mat` (`dmos`, `orgs`;
no std); dmos.mat's `orgs` stand in if the realigned file lacks them. The 982 rows are the
concatenation of the distortion folders in a fixed order: jp2k (227), jpeg (233), wn (174),
gblur (174), fastfading (174), each `img1.bmp ... imgN.bmp`. Rows with `orgs == 1` are undistorted
reference copies and are dropped (203 of them), leaving 779. Score: DMOS, lower is better.
`ref_id` numbers the reference names in order of first appearance.

Order for the authors' splits: VIPNet lists LIVE's references with `os.listdir`, whose order the
file system decides, so its rounds cannot be replayed (`vipnet_K` refuses LIVE; the cache's
reference-disjoint `random_K` splits are the protocol here).
"""

from __future__ import annotations

import math
from pathlib import Path

from iqa_cli.data.datasets._files import (
    OnMissing,
    Row,
    build_records,
    check_lengths,
    check_root,
    find_file,
    load_mat,
    mat_strings,
    mat_vector,
    to_score,
)
from iqa_cli.data.records import DatasetSpec, Record
from iqa_cli.errors import DataError

REFNAMES_FILE = "refnames_all.mat"
REALIGNED_FILE = "dmos_realigned.mat"
DMOS_FILE = "dmos.mat"
REFERENCE_FOLDER = "refimgs"  # the 29 reference BMPs
# Row order of every .mat vector: the distortion folders concatenated, img1..imgN each.
FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
ROWS = sum(count for _, count in FOLDERS)  # 982


def _row_images() -> list[str]:
    return [f"{folder}/img{k}.bmp" for folder, count in FOLDERS for k in range(1, count + 1)]


def parse(root: Path, *, on_missing: OnMissing = None) -> list[Record]:
    root = check_root(root)
    refnames_path = find_file(root, [REFNAMES_FILE])
    dataset_root = refnames_path.parent
    realigned = find_file(dataset_root, [REALIGNED_FILE], max_depth=0, required=False)
    plain = find_file(dataset_root, [DMOS_FILE], max_depth=0, required=False)
    scores_path = realigned or plain
    if scores_path is None:
        raise DataError(
            f"metadata file '{REALIGNED_FILE}' (or '{DMOS_FILE}') not found beside {REFNAMES_FILE}", path=dataset_root
        )
    score_var, std_var = ("dmos_new", "dmos_std") if realigned else ("dmos", None)
    content = load_mat(scores_path, [score_var], optional=["orgs", "dmos_std"])
    dmos = mat_vector(content[score_var], path=scores_path, variable=score_var)
    std = None
    if std_var and std_var in content:  # realigned std: present in the release, but not needed
        std = mat_vector(content[std_var], path=scores_path, variable=std_var)
    # The reference flags are in both files; fall back to dmos.mat's if the realigned file lacks them.
    orgs_path = scores_path if "orgs" in content or plain is None else plain
    orgs_content = content if orgs_path is scores_path else load_mat(orgs_path, ["orgs"])
    if "orgs" not in orgs_content:
        raise DataError("has no variable 'orgs' (the reference-copy flags)", path=orgs_path)
    orgs = mat_vector(orgs_content["orgs"], path=orgs_path, variable="orgs")
    refnames = mat_strings(
        load_mat(refnames_path, ["refnames_all"])["refnames_all"], path=refnames_path, variable="refnames_all"
    )
    lengths = {
        REFNAMES_FILE: (refnames_path, len(refnames)),
        score_var: (scores_path, len(dmos)),
        "orgs": (orgs_path, len(orgs)),
    }
    if std is not None:
        lengths["dmos_std"] = (scores_path, len(std))
    count = check_lengths(lengths)
    if count != ROWS:
        raise DataError(
            f"{score_var} has {count} entries; expected {ROWS} (jp2k, jpeg, wn, gblur, fastfading)", path=scores_path
        )
    rows = []
    for i, image in enumerate(_row_images()):
        if orgs[i] == 1:
            continue  # an undistorted copy of the reference, not a test image
        if orgs[i] != 0:
            raise DataError(f"orgs entry {i + 1} is {orgs[i]:g}; expected 0 or 1", path=orgs_path)
        where = f"entry {i + 1}"
        if not refnames[i]:
            raise DataError(f"refnames_all entry {i + 1} is empty", path=refnames_path)
        rows.append(
            Row(
                relative=image,
                score=to_score(dmos[i], source=scores_path, where=where),
                std=to_score(std[i], source=scores_path, where=where, what="std") if std is not None else math.nan,
                ref_key=refnames[i].lower(),
                reference=f"{REFERENCE_FOLDER}/{refnames[i]}",
            )
        )
    return build_records(rows, dataset_root=dataset_root, metadata=scores_path, on_missing=on_missing)


SPEC = DatasetSpec(
    name="live",
    title="LIVE IQA release 2 (779 distorted images, 29 references)",
    parse=parse,
    score_type="DMOS",
    native_range=(1.0, 100.0),
    lower_better=True,
    valid_range=(-5.0, 115.0),  # realigned DMOS runs about -2.6 to 111.8 (datasets.md)
    default_resize="none",
    reference_disjoint=True,
    expects=(
        REFNAMES_FILE,
        f"{REALIGNED_FILE} (or {DMOS_FILE})",
        "jp2k/ jpeg/ wn/ gblur/ fastfading/",
    ),
    aliases=("liveiqa", "live-iqa", "databaserelease2", "live2"),
)
