"""TID2013 (3,000 distorted images of 25 references).

Metadata: `mos_with_names.txt` (`<MOS> <name>` per line, no header) and `mos_std.txt` (one std per
line, same order); images in `distorted_images/`. The archive's case is inconsistent (references
`I01.BMP` ... but `i25.bmp`; some distorted files start with `I` although the list says `i`), so
names resolve case-insensitively and the cache keeps the on-disk spelling. Score: MOS 0-9, higher
is better. `ref_id` numbers the reference (`iXX` prefix) in order of first appearance.

Order for the authors' splits: VIPNet's loader sorts the reference names (`sorted(...)`) and keys
images by their `iXX` prefix; `vipnet_K` does the same from the stored names.
"""

from __future__ import annotations

import re
from pathlib import Path

from iqa_cli.data.datasets._files import (
    OnMissing,
    Row,
    build_records,
    check_lengths,
    check_root,
    find_file,
    read_text_lines,
    to_score,
)
from iqa_cli.data.records import DatasetSpec, Record
from iqa_cli.errors import DataError

SCORES_FILE = "mos_with_names.txt"
STD_FILE = "mos_std.txt"
IMAGE_FOLDER = "distorted_images"
REFERENCE_FOLDER = "reference_images"  # I01.BMP ... I24.BMP and i25.bmp
_NAME = re.compile(r"^i(\d+)_\d+_\d+\.bmp$", re.IGNORECASE)


def parse(root: Path, *, on_missing: OnMissing = None) -> list[Record]:
    root = check_root(root)
    scores_path = find_file(root, [SCORES_FILE])
    dataset_root = scores_path.parent
    lines = read_text_lines(scores_path)
    std_path = find_file(dataset_root, [STD_FILE], max_depth=0, required=False)
    if std_path is None:
        raise DataError(f"metadata file '{STD_FILE}' not found beside {SCORES_FILE}", path=dataset_root)
    std_lines = read_text_lines(std_path)
    check_lengths({SCORES_FILE: (scores_path, len(lines)), STD_FILE: (std_path, len(std_lines))})
    rows = []
    for (line, fields), (std_line, std_fields) in zip(lines, std_lines, strict=True):
        if len(fields) != 2:
            raise DataError(f"line {line}: expected '<MOS> <name>', got {' '.join(fields)!r}", path=scores_path)
        mos, name = fields
        match = _NAME.match(name)
        if match is None:
            raise DataError(f"line {line}: image name {name!r} is not like i01_01_1.bmp", path=scores_path)
        if len(std_fields) != 1:
            raise DataError(f"line {std_line}: expected one number, got {' '.join(std_fields)!r}", path=std_path)
        rows.append(
            Row(
                relative=f"{IMAGE_FOLDER}/{name}",
                score=to_score(mos, source=scores_path, where=f"line {line}"),
                std=to_score(std_fields[0], source=std_path, where=f"line {std_line}", what="std"),
                ref_key=str(int(match.group(1))),
                reference=f"{REFERENCE_FOLDER}/i{int(match.group(1)):02d}.bmp",  # resolved case-insensitively
            )
        )
    if not rows:
        raise DataError("lists no images", path=scores_path)
    return build_records(rows, dataset_root=dataset_root, metadata=scores_path, on_missing=on_missing)


SPEC = DatasetSpec(
    name="tid2013",
    title="TID2013 (3,000 distorted images, 25 references)",
    parse=parse,
    score_type="MOS",
    native_range=(0.0, 9.0),
    lower_better=False,
    default_resize="none",
    reference_disjoint=True,
    expects=(SCORES_FILE, STD_FILE, f"{IMAGE_FOLDER}/"),
    aliases=("tid",),
)
