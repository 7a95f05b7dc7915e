"""KonIQ-10k, from the official archives.

Score: the `MOS` column (1-5 ACR mean) of the official `koniq10k_scores_and_distributions.csv`, with
`SD` as std. This is the column the esnthere methods (VT-IQA, IEIT, AL-IQA) train on, and the cache
declares the 1-5 range. The file's 0-100 `MOS_zscore` (computed from per-rater z-scores) is kept beside
it as the cache's `mos_zscore`: VIPNet's loader trains and tests on it. It is not a monotonic map of the
MOS: over the 10,073 images the two rank with SRCC 0.992 (the 1-5 MOS recomputed from c1..c5 of the
public sets file, against that file's z-score MOS), so a correlation against one is not one against the
other.
The rating counts `c1`..`c5` (1 = bad ... 5 = excellent), normalised to sum to 1, are kept as each
image's rating distribution (SSL-IQA trains on them); a file without those columns gives none.

`koniq10k_distributions_sets.csv` (subpic/koniq on GitHub) is used only for the official split: its
`set` column is joined on `image_name`. Its `MOS` column is the 0-100 z-score MOS, so it cannot
stand in for the scores file.

Images: the `1024x768/` folder is preferred when both releases are present, else `512x384/`. The
cache keeps them as they are by default (`--size none`): VT-IQA cuts its 768 px patch view from the
1024x768 originals (about 24 GB of uint8 for all 10,073); `--size 512x384` gives a 6 GB cache for the
methods that read the half-size release (VIPNet, SSL-IQA). Folders may be doubled (`koniq10k_1024x768/1024x768/`)
or named like the archive (`koniq10k_1024x768/koniq10k_1024x768/`); the folder that actually holds
the listed images wins.

Order: the cache keeps the CSV's row order, which is not guaranteed to be sorted. The esnthere
scripts (VT-IQA, IEIT, AL-IQA) sort the rows by `image_name` (`np.argsort`) before their seed-0
split, so `authors_prep`, the chains, the shuffles and AL-IQA's index files are computed on the
name-sorted order. VIPNet's loader keeps the CSV order (`vipnet_K` uses it). SSL-IQA's split files
(`labeled_<k>`) are not public: its runs use our seeded partition.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

from iqa_cli.data.datasets._files import (
    SEARCH_DEPTH,
    CaseInsensitiveTree,
    OnMissing,
    Row,
    build_records,
    check_root,
    find_dirs,
    find_file,
    read_csv_table,
    to_score,
)
from iqa_cli.data.records import DatasetSpec, Record
from iqa_cli.errors import DataError

SCORES_FILE = "koniq10k_scores_and_distributions.csv"
SETS_FILE = "koniq10k_distributions_sets.csv"
# Image folders in order of preference: the full-size release first.
IMAGE_FOLDERS = (("1024x768", "koniq10k_1024x768"), ("512x384", "koniq10k_512x384"))
OFFICIAL_SETS = ("training", "validation", "test")
RATING_COLUMNS = ("c1", "c2", "c3", "c4", "c5")  # vote counts per ACR category, bad to excellent
ZSCORE_COLUMN = "MOS_zscore"


def _image_folder(root: Path, images: list[str], scores_path: Path) -> Path:
    """The preferred folder that holds any of the first listed images (case-insensitively)."""
    probe = images[:20]  # a few, so one missing image does not hide the folder
    for names in IMAGE_FOLDERS:
        for folder in find_dirs(root, names):
            tree = CaseInsensitiveTree(folder)
            if any(tree.resolve_file(name) is not None for name in probe):
                return folder
    searched = " or ".join(f"{names[0]}/" for names in IMAGE_FOLDERS)
    raise DataError(f"no image folder {searched} holding the images listed in {scores_path.name}", path=root)


def _official_sets(root: Path) -> tuple[Path, dict[str, str]] | None:
    sets_path = find_file(root, [SETS_FILE], required=False)
    if sets_path is None:
        return None
    sets: dict[str, str] = {}
    for line, row in read_csv_table(sets_path, ["image_name", "set"]):
        value = row["set"].lower()
        if value not in OFFICIAL_SETS:
            raise DataError(f"line {line}: set {row['set']!r} is not one of {', '.join(OFFICIAL_SETS)}", path=sets_path)
        sets[row["image_name"]] = value
    return sets_path, sets


def _distribution(row: dict[str, str], path: Path, line: int) -> tuple[float, ...] | None:
    """The image's rating counts c1..c5 as shares of its votes; None when the file has no such columns."""
    if any(column not in row for column in RATING_COLUMNS):
        return None
    counts = [to_score(row[c], source=path, where=f"line {line}", what=c) for c in RATING_COLUMNS]
    total = sum(counts)
    if min(counts) < 0 or total <= 0:
        raise DataError(f"line {line}: rating counts c1..c5 must be non-negative with a positive sum", path=path)
    return tuple(c / total for c in counts)


def _zscore(row: dict[str, str], path: Path, line: int) -> float:
    """The image's `MOS_zscore`; NaN when the file has no such column."""
    if ZSCORE_COLUMN not in row:
        return math.nan
    return to_score(row[ZSCORE_COLUMN], source=path, where=f"line {line}", what=ZSCORE_COLUMN)


def parse(root: Path, *, on_missing: OnMissing = None) -> list[Record]:
    root = check_root(root)
    scores_path = find_file(root, [SCORES_FILE], required=False)
    if scores_path is None:
        hint = ""
        if find_file(root, [SETS_FILE], required=False) is not None:
            hint = f" ({SETS_FILE} alone is not enough: its MOS is the 0-100 z-score, the 1-5 MOS is in {SCORES_FILE})"
        raise DataError(
            f"metadata file '{SCORES_FILE}' not found (searched {SEARCH_DEPTH} folder levels deep){hint}", path=root
        )
    table = read_csv_table(scores_path, ["image_name", "MOS", "SD"])
    if not table:
        raise DataError("lists no images", path=scores_path)
    official = _official_sets(root)
    rows = []
    for line, row in table:
        name = row["image_name"]
        if not name:
            raise DataError(f"line {line}: empty image_name", path=scores_path)
        official_set = None
        if official is not None:
            sets_path, sets = official
            if name not in sets:
                raise DataError(f"has no row for {name} (listed in {SCORES_FILE})", path=sets_path)
            official_set = sets[name]
        rows.append(
            Row(
                relative=name,
                score=to_score(row["MOS"], source=scores_path, where=f"line {line}"),
                std=to_score(row["SD"], source=scores_path, where=f"line {line}", what="SD"),
                official_set=official_set,
                distribution=_distribution(row, scores_path, line),
                mos_zscore=_zscore(row, scores_path, line),
            )
        )
    folder = _image_folder(root, [r.relative for r in rows], scores_path)
    # Names keep the resolution folder ('1024x768/x.jpg') so a cache says which release it came from.
    rows = [replace(r, relative=f"{folder.name}/{r.relative}") for r in rows]
    return build_records(rows, dataset_root=folder.parent, metadata=scores_path, on_missing=on_missing)


SPEC = DatasetSpec(
    name="koniq",
    title="KonIQ-10k (10,073 images; official split when the sets CSV is present)",
    parse=parse,
    score_type="MOS",
    native_range=(1.0, 5.0),
    lower_better=False,
    default_resize="none",  # 1024x768 from the preferred folder: VT-IQA cuts its 768 px view from it
    expects=(
        SCORES_FILE,
        "1024x768/ (preferred) or 512x384/",
        f"{SETS_FILE} (optional: official training/validation/test split)",
    ),
    aliases=("koniq10k", "koniq-10k"),
    full_side=1024,
)
