"""LIVE In the Wild Image Quality Challenge (LIVEW / LIVEC / CLIVE), official `ChallengeDB_release`.

Layout: `Data/AllImages_release.mat` (an (N,1) cell of bare file names), `Data/AllMOS_release.mat` and
`Data/AllStdDev_release.mat` ((1,N) doubles, same order), images in `Images/`. The first 7 entries are
the subject-training images (kept in `Images/trainingImages/`). The archive often unzips to a doubled
`ChallengeDB_release/ChallengeDB_release/`, so `Data/` is found by a recursive search.

Image set and order: all 1,169 rows, in the order of the official metadata (the 7 training images
first). VT-IQA, IEIT and AL-IQA prepared all 1,169 in this order (AL-IQA's `livew_ds.mat` and
`prompt3vote_livew.mat` have 1,169 columns), so their splits index it. The 7 carry the
`TRAINING_IMAGE` flag: seeded `random_K` splits leave them out (the 1,162 most papers and pyiqa
use), and so do VIPNet's rounds (its loader slices `[7:]`).
"""

from __future__ import annotations

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
from iqa_cli.data.records import TRAINING_IMAGE, DatasetSpec, Record
from iqa_cli.errors import DataError

NAMES_FILE = "AllImages_release.mat"
MOS_FILE = "AllMOS_release.mat"
STD_FILE = "AllStdDev_release.mat"
TRAINING_ROWS = 7  # the subject-training images listed first in every .mat file


def parse(root: Path, *, on_missing: OnMissing = None) -> list[Record]:
    root = check_root(root)
    names_path = find_file(root, [NAMES_FILE])
    data_dir = names_path.parent
    dataset_root = data_dir.parent
    paths = {}
    for file_name in (MOS_FILE, STD_FILE):
        path = find_file(data_dir, [file_name], max_depth=0, required=False)
        if path is None:
            raise DataError(f"metadata file '{file_name}' not found beside {NAMES_FILE}", path=data_dir)
        paths[file_name] = path
    names = mat_strings(
        load_mat(names_path, ["AllImages_release"])["AllImages_release"], path=names_path, variable="AllImages_release"
    )
    mos = mat_vector(
        load_mat(paths[MOS_FILE], ["AllMOS_release"])["AllMOS_release"], path=paths[MOS_FILE], variable="AllMOS_release"
    )
    std = mat_vector(
        load_mat(paths[STD_FILE], ["AllStdDev_release"])["AllStdDev_release"],
        path=paths[STD_FILE],
        variable="AllStdDev_release",
    )
    count = check_lengths(
        {
            NAMES_FILE: (names_path, len(names)),
            MOS_FILE: (paths[MOS_FILE], len(mos)),
            STD_FILE: (paths[STD_FILE], len(std)),
        }
    )
    if count <= TRAINING_ROWS:
        raise DataError(
            f"lists {count} images; expected the 7 training images followed by the test images", path=names_path
        )
    rows = []
    for i in range(count):
        if not names[i]:
            raise DataError(f"entry {i + 1} of AllImages_release is an empty name", path=names_path)
        training = i < TRAINING_ROWS
        rows.append(
            Row(
                relative=f"Images/trainingImages/{names[i]}" if training else f"Images/{names[i]}",
                score=to_score(mos[i], source=paths[MOS_FILE], where=f"entry {i + 1}"),
                std=to_score(std[i], source=paths[STD_FILE], where=f"entry {i + 1}", what="std"),
                flags=TRAINING_IMAGE if training else 0,
            )
        )
    return build_records(rows, dataset_root=dataset_root, metadata=names_path, on_missing=on_missing)


SPEC = DatasetSpec(
    name="livew",
    title="LIVE In the Wild Image Quality Challenge (1,169 images: 1,162 test + 7 flagged training images)",
    parse=parse,
    score_type="MOS",
    native_range=(1.0, 100.0),
    lower_better=False,
    default_resize="none",  # all 500x500
    expects=(
        "Data/AllImages_release.mat",
        "Data/AllMOS_release.mat",
        "Data/AllStdDev_release.mat",
        "Images/",
    ),
    aliases=("livec", "clive", "livechallenge", "live-itw", "challengedb"),
)
