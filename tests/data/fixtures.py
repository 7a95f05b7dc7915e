"""Miniature copies of each official dataset layout, written into a temporary folder.

Each `make_<name>(root, **variants)` writes the dataset's official layout in miniature (same file
and folder names, same metadata formats: .mat v5 cell arrays, .xlsx with the real sheet names and
header rows, CSV/TXT as shipped) with a dozen small, really encoded images, and returns an
`ExpectedDataset`: what a correct parser must return, in order, and the decoded pixels of every
image (for JPEG: what Pillow decodes from the written file), so cache tests can compare
pixel-for-pixel. Everything is seeded; two calls write identical bytes.

Facts about each layout come from ../shared/specs/datasets.md; the quirks each builder exercises
are listed in its docstring.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class ExpectedRecord:
    name: str  # relative to ExpectedDataset.dataset_root, '/'-separated, on-disk spelling
    score: float
    std: float = math.nan
    ref_id: int = -1
    official_set: str | None = None
    distribution: tuple[float, ...] | None = None  # rating shares per category (KonIQ's c1..c5 normalised)
    flags: int = 0  # iqa_cli.data.records bits (TRAINING_IMAGE for LIVE Challenge's 7)
    mos_zscore: float = math.nan  # KonIQ's MOS_zscore column


@dataclass
class ExpectedDataset:
    dataset: str  # registry name, e.g. 'livew'
    root: Path  # what a user passes as --root (a parent folder, possibly with doubled folders)
    dataset_root: Path  # the folder record names are relative to
    records: list[ExpectedRecord]
    pixels: dict[str, np.ndarray]  # name -> uint8 H x W x 3, as decoded by Pillow
    dropped: list[str] = field(default_factory=list)  # metadata entries a parser must leave out

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    @property
    def scores(self) -> list[float]:
        return [r.score for r in self.records]

    def path(self, name: str) -> Path:
        return self.dataset_root / name


# --- writers ---------------------------------------------------------------------------------


def _rng(dataset: str) -> np.random.Generator:
    return np.random.default_rng(sum(dataset.encode()) * 7919)


def write_image(path: Path, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Write a random RGB image (format from the suffix) and return its pixels as Pillow decodes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A smooth gradient plus noise: compresses like a photo, and resizing it means something.
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 256, 3)
    gradient = (xx * 160 // max(width - 1, 1) + yy * 90 // max(height - 1, 1))[..., None] + base
    pixels = ((gradient + rng.integers(-40, 41, (height, width, 3))) % 256).astype(np.uint8)
    suffix = path.suffix.lower()
    image = Image.fromarray(pixels, "RGB")
    if suffix in (".jpg", ".jpeg"):
        image.save(path, format="JPEG", quality=90)
    elif suffix == ".bmp":
        image.save(path, format="BMP")
    elif suffix == ".png":
        image.save(path, format="PNG")
    else:
        raise ValueError(f"no writer for {path.suffix}")
    with Image.open(path) as written:
        decoded = np.asarray(written.convert("RGB"), dtype=np.uint8)
    if suffix != ".jpg" and suffix != ".jpeg":
        assert np.array_equal(decoded, pixels)
    return decoded


def _cell_column(names: Sequence[str]) -> np.ndarray:
    cells = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        cells[i, 0] = name
    return cells


def _cell_row(names: Sequence[str]) -> np.ndarray:
    cells = np.empty((1, len(names)), dtype=object)
    for i, name in enumerate(names):
        cells[0, i] = name
    return cells


def _row_vector(values: Sequence[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(1, -1)


def write_mat(path: Path, variables: dict[str, np.ndarray]) -> None:
    from scipy.io import savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(str(path), variables, format="5")


def write_xlsx(path: Path, sheets: dict[str, list[list[object]]], *, first_column: int = 1, first_row: int = 1) -> None:
    """Write sheets of rows; `first_row`/`first_column` (1-based) place the first row's first cell."""
    from openpyxl import Workbook

    path.parent.mkdir(parents=True, exist_ok=True)
    book = Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for r, row in enumerate(rows):
            for c, value in enumerate(row):
                if value is not None:
                    sheet.cell(row=first_row + r, column=first_column + c, value=value)
    book.save(str(path))


def _base(root: Path, folder: str, doubled: bool) -> Path:
    base = root / folder / folder if doubled else root / folder
    base.mkdir(parents=True, exist_ok=True)
    return base


def _expected(dataset: str, root: Path, base: Path, records, pixels, dropped=()) -> ExpectedDataset:
    return ExpectedDataset(dataset, root, base, list(records), dict(pixels), list(dropped))


# --- datasets --------------------------------------------------------------------------------


def make_livew(root: Path, *, doubled: bool = True) -> ExpectedDataset:
    """ChallengeDB_release: three .mat files in Data/ ((N,1) name cell, (1,N) doubles), the first 7
    entries are the training images t1..t7 in Images/trainingImages/ (kept, flagged TRAINING_IMAGE),
    test images mix .bmp and upper-case .JPG, and the archive's doubled top folder."""
    rng = _rng("livew")
    base = _base(root, "ChallengeDB_release", doubled)
    (base / "README.txt").write_text(
        "LIVE In the Wild Image Quality Challenge Database (miniature)\n", encoding="utf-8"
    )
    training = [f"t{k}.bmp" for k in range(1, 8)]
    tests = ["3.bmp", "100.bmp", "611.JPG", "1002.JPG", "17.bmp", "840.JPG", "1169.bmp", "5.JPG", "250.bmp", "99.JPG"]
    names = training + tests
    mos = [float(v) for v in rng.uniform(3.42, 92.43, len(names))]
    std = [float(v) for v in rng.uniform(15.0, 24.0, len(names))]
    pixels = {}
    for name in training:
        pixels[f"Images/trainingImages/{name}"] = write_image(base / "Images" / "trainingImages" / name, 32, 32, rng)
    for name in tests:
        pixels[f"Images/{name}"] = write_image(base / "Images" / name, 32, 32, rng)
    write_mat(base / "Data" / "AllImages_release.mat", {"AllImages_release": _cell_column(names)})
    write_mat(base / "Data" / "AllMOS_release.mat", {"AllMOS_release": _row_vector(mos)})
    write_mat(base / "Data" / "AllStdDev_release.mat", {"AllStdDev_release": _row_vector(std)})
    records = [ExpectedRecord(f"Images/trainingImages/{n}", mos[i], std[i], flags=1) for i, n in enumerate(training)]
    records += [ExpectedRecord(f"Images/{n}", mos[i + 7], std[i + 7]) for i, n in enumerate(tests)]
    return _expected("livew", root, base, records, pixels)


def _shares(counts: Sequence[float]) -> tuple[float, ...]:
    """Rating counts as shares of their sum, as the KonIQ parser normalises c1..c5."""
    return tuple(c / sum(counts) for c in counts)


KONIQ_HEADER = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"]
KONIQ_SETS_HEADER = ["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "set"]


def make_koniq(
    root: Path,
    *,
    doubled: bool = True,
    folders: Sequence[str] = ("1024x768", "512x384"),
    scores_csv: bool = True,
    sets_csv: bool = True,
) -> ExpectedDataset:
    """KonIQ-10k: the official 10-column scores CSV (quoted header), the GitHub sets CSV (whose MOS is
    the z-score, rows in another order), the 1024x768 and/or 512x384 folders (doubled as
    `koniq10k_1024x768/1024x768/`); the 1024x768 images are preferred when both exist."""
    rng = _rng("koniq")
    ids = [
        "10004473376.jpg",
        "10007357496.jpg",
        "10028140093.jpg",
        "2017309837.jpg",
        "826373.jpg",
        "10030224853.jpg",
        "3551648026.jpg",
        "5131296390.jpg",
        "7393726436.jpg",
        "9620539485.jpg",
        "1009384962.jpg",
        "44563567.jpg",
    ]
    sets = ["training"] * 8 + ["validation"] * 2 + ["test"] * 2
    rows = []
    for name in ids:
        counts = rng.dirichlet(np.ones(5))
        mos = float(np.dot(counts, np.arange(1, 6)))
        sd = float(np.sqrt(np.dot(counts, (np.arange(1, 6) - mos) ** 2)))
        zscore = float((mos - 1.0) * 25.0 + rng.uniform(-2, 2))
        rows.append((name, [float(c) for c in counts], int(rng.integers(93, 158)), mos, sd, zscore))
    pixels_by_folder: dict[str, dict[str, np.ndarray]] = {}
    sizes = {"1024x768": (48, 36), "512x384": (24, 18)}
    for folder in folders:
        image_dir = root / f"koniq10k_{folder}" / folder if doubled else root / folder
        pixels_by_folder[folder] = {name: write_image(image_dir / name, *sizes[folder], rng) for name in ids}
    meta_dir = root / "koniq10k_scores_and_distributions" if doubled else root
    meta_dir.mkdir(parents=True, exist_ok=True)
    if scores_csv:
        with open(meta_dir / "koniq10k_scores_and_distributions.csv", "w", encoding="utf-8", newline="") as f:
            f.write(",".join(f'"{h}"' for h in KONIQ_HEADER) + "\n")
            writer = csv.writer(f)
            for name, counts, total, mos, sd, zscore in rows:
                writer.writerow([name, *map(repr, counts), total, repr(mos), repr(sd), repr(zscore)])
    if sets_csv:
        order = rng.permutation(len(rows))
        with open(root / "koniq10k_distributions_sets.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(KONIQ_SETS_HEADER)
            for i in order:
                name, counts, total, mos, sd, zscore = rows[i]
                writer.writerow([name, *map(repr, counts), total, repr(zscore), repr(sd), sets[i]])
    folder = next((f for f in ("1024x768", "512x384") if f in folders), folders[0] if folders else "1024x768")
    dataset_root = (root / f"koniq10k_{folder}") if doubled else root
    records = [
        ExpectedRecord(
            f"{folder}/{name}", mos, sd, -1, sets[i] if sets_csv else None, _shares(counts), mos_zscore=zscore
        )
        for i, (name, counts, _, mos, sd, zscore) in enumerate(rows)
    ]
    pixels = {f"{folder}/{name}": p for name, p in pixels_by_folder.get(folder, {}).items()}
    return _expected("koniq", root, dataset_root, records, pixels)


SPAQ_HEADER = ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"]
SPAQ_SCENES = [
    "Animal",
    "Cityscape",
    "Human",
    "Indoor scene",
    "Landscape",
    "Night scene",
    "Plant",
    "Still-life",
    "Others",
]


def make_spaq(root: Path, *, annotations: bool = True, doubled: bool = False) -> ExpectedDataset:
    """SPAQ: TestImage/ with 5-digit JPEG names of varied sizes and orientations, and the three
    annotation workbooks (file names with spaces) in Annotations/ or beside TestImage/."""
    rng = _rng("spaq")
    base = _base(root, "SPAQ", doubled)
    names = [f"{k:05d}.jpg" for k in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)]
    sizes = [
        (40, 30),
        (30, 40),
        (44, 33),
        (36, 27),
        (40, 30),
        (27, 36),
        (48, 36),
        (40, 30),
        (33, 44),
        (40, 22),
        (40, 30),
    ]
    pixels = {
        f"TestImage/{n}": write_image(base / "TestImage" / n, w, h, rng) for n, (w, h) in zip(names, sizes, strict=True)
    }
    mos = [float(round(v, 2)) for v in rng.uniform(2.0, 96.0, len(names))]
    mos[0] = 48.86
    xlsx_dir = base / "Annotations" if annotations else base
    attribute_rows = [
        [n, m, *[float(round(v, 2)) for v in rng.uniform(0, 100, 5)]] for n, m in zip(names, mos, strict=True)
    ]
    write_xlsx(xlsx_dir / "MOS and Image attribute scores.xlsx", {"Sheet1": [SPAQ_HEADER, *attribute_rows]})
    scene_rows = [[n, *[int(v) for v in rng.integers(0, 2, len(SPAQ_SCENES))]] for n in names]
    write_xlsx(xlsx_dir / "Scene category labels.xlsx", {"Sheet1": [["Image name", *SPAQ_SCENES], *scene_rows]})
    exif_rows = [[n, "Huawei", 4.0, 0.01, 100, 2.2, 0.0, 1, 10] for n in names]
    write_xlsx(xlsx_dir / "EXIF_tags.xlsx", {"Source EXIF tags": [["Image name", *"abcdefgh"], *exif_rows]})
    records = [ExpectedRecord(f"TestImage/{n}", m) for n, m in zip(names, mos, strict=True)]
    return _expected("spaq", root, base, records, pixels)


BID_SIZES = [
    (40, 30),
    (57, 43),
    (30, 40),
    (40, 30),
    (48, 36),
    (43, 57),
    (40, 30),
    (44, 33),
    (36, 27),
    (40, 30),
    (32, 24),
]


def _write_bid_layout(
    base: Path, rng: np.random.Generator, *, nested: bool, std_column: bool
) -> tuple[list[ExpectedRecord], dict[str, np.ndarray]]:
    numbers = [456, 1, 2, 3, 586, 13, 21, 34, 55, 89, 144]  # sheet rows are not in number order
    image_dir = base / "ImageDatabase" if nested else base
    prefix = "ImageDatabase/" if nested else ""
    pixels = {}
    for number, (w, h) in zip(numbers, BID_SIZES, strict=True):
        name = f"DatabaseImage{number:04d}.JPG"
        pixels[prefix + name] = write_image(image_dir / name, w, h, rng)
    # Six decimals, as in the real sheet (and so the values survive the .xlsx round trip exactly).
    mos = [round(float(v), 6) for v in rng.uniform(0.16, 4.92, len(numbers))]
    mos[0] = 3.180518
    std = [round(float(v), 6) for v in rng.uniform(0.5, 1.3, len(numbers))]
    header = ["Image Number", "Average Subjective Grade", "S1", "S2", "S3"]
    if std_column:
        header.append("Standard Deviation")
    rows: list[list[object]] = [header]
    for number, m, s in zip(numbers, mos, std, strict=True):
        grades = [int(v) for v in rng.integers(0, 6, 3)]
        rows.append([number, m, *grades, *([s] if std_column else [])])
    write_xlsx(base / "DatabaseGrades.xlsx", {"Plan1": rows})
    records = [
        ExpectedRecord(f"{prefix}DatabaseImage{n:04d}.JPG", m, s if std_column else math.nan)
        for n, m, s in zip(numbers, mos, std, strict=True)
    ]
    return records, pixels


def make_bid(root: Path, *, nested: bool = True, std_column: bool = False, doubled: bool = False) -> ExpectedDataset:
    """BID: DatabaseGrades.xlsx (sheet Plan1, header `Image Number`, `Average Subjective Grade`, per-subject
    columns; rows out of number order) and DatabaseImage####.JPG of varied sizes, in ImageDatabase/ or flat."""
    rng = _rng("bid")
    base = _base(root, "BID", doubled)
    records, pixels = _write_bid_layout(base, rng, nested=nested, std_column=std_column)
    return _expected("bid", root, base, records, pixels)


def make_rbid(root: Path, *, layout: str = "mat", doubled: bool = False) -> ExpectedDataset:
    """RBID: the authors' RBID_mos.mat (char-matrix `RBID_str` of names padded to equal length,
    `RBID_mos` N x 3 with a 1-based name index in column 0 and MOS in column 1) with Image/, or
    (layout='bid') the BID layout."""
    rng = _rng("rbid")
    base = _base(root, "RBID", doubled)
    if layout == "bid":
        records, pixels = _write_bid_layout(base, rng, nested=True, std_column=False)
        return _expected("rbid", root, base, records, pixels)
    if layout != "mat":
        raise ValueError(layout)
    names = ["1.jpg", "2.jpg", "10.JPG", "11.jpg", "100.jpg", "101.JPG", "5.jpg", "57.jpg", "585.jpg", "12.jpg"]
    pixels = {}
    for name, (w, h) in zip(names, BID_SIZES[: len(names)], strict=True):
        pixels[f"Image/{name}"] = write_image(base / "Image" / name, w, h, rng)
    order = [int(i) for i in rng.permutation(len(names))]  # row k describes names[order[k]]
    mos = [float(v) for v in rng.uniform(0.2, 4.9, len(names))]
    table = np.array([[order[k] + 1, mos[k], rng.uniform(0.5, 1.3)] for k in range(len(names))], dtype=np.float64)
    write_mat(base / "RBID_mos.mat", {"RBID_mos": table, "RBID_str": np.array(names)})
    records = [ExpectedRecord(f"Image/{names[order[k]]}", mos[k]) for k in range(len(names))]
    return _expected("rbid", root, base, records, pixels)


CID_HEADER = ["Source_ID", "MOS", "Realigned MOS", "Sharpness", "Graininess", "Lightness", "Color saturation"]
CID_ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV", 5: "V", 6: "VI"}


def make_cid2013(root: Path, *, prefixed_ids: bool = False, doubled: bool = False) -> ExpectedDataset:
    """CID2013: the versioned .xlsx with sheet 'CID2013 MOS' whose header row follows a title row,
    images IS<n>/co<k>/IS_<roman>_C<kk>_D<dd>.jpg in non-contiguous scene folders (IS5/co8, IS6/co7),
    other files beside the scene folders, rows not in folder order, negative realigned MOS."""
    rng = _rng("cid2013")
    base = _base(root, "CID2013", doubled)
    items = [
        (1, 1, 1),
        (1, 2, 5),
        (2, 3, 2),
        (2, 1, 14),
        (3, 6, 7),
        (4, 4, 9),
        (5, 8, 3),
        (5, 5, 12),
        (6, 7, 1),
        (6, 2, 6),
    ]
    items = [items[i] for i in (4, 0, 9, 2, 6, 1, 8, 3, 7, 5)]  # the sheet's order is not the folders'
    pixels, ids, names = {}, [], []
    for s, c, d in items:
        stem = f"IS_{CID_ROMAN[s]}_C{c:02d}_D{d:02d}"
        name = f"IS{s}/co{c}/{stem}.jpg"
        pixels[name] = write_image(base / name, 40, 30, rng)
        ids.append(f"IS{s}/co{c}/{stem}" if prefixed_ids else stem)
        names.append(name)
    for s in {s for s, _, _ in items}:
        (base / f"IS{s}" / f"IS{s} notes.txt").write_text("subjective data notes\n", encoding="utf-8")
    realigned = [round(float(v), 4) for v in rng.uniform(-9.55, 87.88, len(items))]
    realigned[3] = -9.55
    rows: list[list[object]] = [["CID2013 subjective data"], [], CID_HEADER]
    for source_id, r in zip(ids, realigned, strict=True):
        rows.append([source_id, round(r + 3.0, 4), r, *[round(float(v), 4) for v in rng.uniform(0, 100, 4)]])
    write_xlsx(
        base / "CID2013 data - version 12112014.xlsx",
        {"Readme": [["Camera Image Database 2013"]], "CID2013 MOS": rows},
    )
    records = [ExpectedRecord(n, r) for n, r in zip(names, realigned, strict=True)]
    return _expected("cid2013", root, base, records, pixels)


def make_kadid10k(root: Path, *, csv_in_images: bool = False, doubled: bool = False) -> ExpectedDataset:
    """KADID-10k: dmos.csv (`dist_img,ref_img,dmos,var`) beside images/ (or inside it), which holds
    both the references I01.png ... and the distorted I01_01_01.png ..."""
    rng = _rng("kadid10k")
    base = _base(root, "kadid10k", doubled)
    refs = ["I01.png", "I02.png", "I03.png"]
    for ref in refs:
        write_image(base / "images" / ref, 32, 24, rng)
    rows, pixels, records = [], {}, []
    for ref_id, ref in enumerate(refs):
        for dist_type in (1, 9):
            for level in (1, 3):
                name = f"{ref[:-4]}_{dist_type:02d}_{level:02d}.png"
                pixels[f"images/{name}"] = write_image(base / "images" / name, 32, 24, rng)
                mos, var = round(float(rng.uniform(1.0, 4.93)), 2), round(float(rng.uniform(0.1, 1.2)), 3)
                rows.append([name, ref, f"{mos:.2f}", f"{var:.3f}"])
                records.append(
                    ExpectedRecord(f"images/{name}", float(f"{mos:.2f}"), math.sqrt(float(f"{var:.3f}")), ref_id)
                )
    rows[0][2:] = ["4.57", "0.496"]
    records[0] = ExpectedRecord(records[0].name, 4.57, math.sqrt(0.496), 0)
    csv_dir = base / "images" if csv_in_images else base
    with open(csv_dir / "dmos.csv", "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["dist_img", "ref_img", "dmos", "var"])
        writer.writerows(rows)
    return _expected("kadid10k", root, base, records, pixels)


LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))
# Reference name -> miniature size (the real ones are 768x512, 480x720 portrait, 632x505, ...).
LIVE_REFS = {
    "studentsculpture.bmp": (40, 32),
    "rapids.bmp": (48, 32),
    "monarch.bmp": (48, 32),
    "sailing3.bmp": (30, 45),
}


def make_live(
    root: Path, *, realigned: bool = True, doubled: bool = False, uniform_size: bool = False
) -> ExpectedDataset:
    """LIVE release 2: refnames_all.mat ((1,982) cell), dmos.mat (`dmos`, `orgs`) and optionally
    dmos_realigned.mat (`dmos_new`, `dmos_std`, `orgs`); 982 rows in folder-concatenation order of
    which all but ten are reference copies (orgs == 1, dropped; most of their files are absent).
    Image sizes follow their reference and differ (one portrait) unless `uniform_size`."""
    rng = _rng("live")
    base = _base(root, "databaserelease2", doubled)
    refs = list(LIVE_REFS)
    for ref, (w, h) in LIVE_REFS.items():
        write_image(base / "refimgs" / ref, *((48, 32) if uniform_size else (w, h)), rng)
    images = [f"{folder}/img{k}.bmp" for folder, count in LIVE_FOLDERS for k in range(1, count + 1)]
    assert len(images) == 982
    kept = [0, 1, 4, 227, 229, 461, 634, 637, 809, 810]  # jp2k img1,2,5; jpeg img1,3; wn img2; gblur img1,4; ff img2,3
    refnames = [refs[int(i)] for i in rng.integers(0, len(refs), 982)]
    for i, ref in zip(
        kept, ["rapids.bmp", "sailing3.bmp", "rapids.bmp", "monarch.bmp", "studentsculpture.bmp"] * 2, strict=True
    ):
        refnames[i] = ref
    orgs = np.ones(982)
    orgs[kept] = 0
    dmos = rng.uniform(-2.64, 111.77, 982)
    dmos_new = dmos + rng.uniform(-3, 3, 982)
    dmos_std = rng.uniform(5, 15, 982)
    dmos[kept[0]], dmos_new[kept[1]] = -2.64, 111.77
    pixels = {}
    for i in kept:
        size = (48, 32) if uniform_size else LIVE_REFS[refnames[i]]
        pixels[images[i]] = write_image(base / images[i], *size, rng)
    for i in (2, 228):  # two reference copies exist on disk, as in the release
        write_image(base / images[i], *((48, 32) if uniform_size else LIVE_REFS[refnames[i]]), rng)
    write_mat(base / "refnames_all.mat", {"refnames_all": _cell_row(refnames)})
    write_mat(base / "dmos.mat", {"dmos": _row_vector(dmos), "orgs": _row_vector(orgs)})
    if realigned:
        write_mat(
            base / "dmos_realigned.mat",
            {"dmos_new": _row_vector(dmos_new), "dmos_std": _row_vector(dmos_std), "orgs": _row_vector(orgs)},
        )
    (base / "readme.txt").write_text("LIVE Image Quality Assessment Database Release 2 (miniature)\n", encoding="utf-8")
    ref_ids: dict[str, int] = {}
    records = []
    for i in kept:
        ref_id = ref_ids.setdefault(refnames[i], len(ref_ids))
        score = float(dmos_new[i]) if realigned else float(dmos[i])
        std = float(dmos_std[i]) if realigned else math.nan
        records.append(ExpectedRecord(images[i], score, std, ref_id))
    dropped = [images[i] for i in range(982) if orgs[i] == 1]
    return _expected("live", root, base, records, pixels, dropped)


CSIQ_HEADER = ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"]
# dst_type in the sheet -> (folder, token) as on disk
CSIQ_TYPES = {
    "noise": ("awgn", "AWGN", 1),
    "jpeg": ("jpeg", "JPEG", 2),
    "jpeg 2000": ("jpeg2000", "jpeg2000", 3),
    "fnoise": ("fnoise", "fnoise", 4),
    "blur": ("blur", "BLUR", 5),
    "contrast": ("contrast", "contrast", 6),
}


def make_csiq(root: Path, *, folder_case: str = "lower", doubled: bool = False) -> ExpectedDataset:
    """CSIQ: csiq.DMOS.xlsx with sheets all_by_image / all_by_distortion, header on row 4 behind three
    blank columns, numeric reference name 1600, `jpeg 2000` with a space; dst_imgs/<type>/ with
    mixed-case tokens (AWGN, contrast); folder_case='upper' writes AWGN/ BLUR/ JPEG/ folders."""
    rng = _rng("csiq")
    base = _base(root, "CSIQ", doubled)
    refs: list[object] = [1600, "shroom", "child_swimming"]
    for ref in refs:
        write_image(base / "src_imgs" / f"{ref}.png", 32, 32, rng)
    entries = [
        (1600, "noise", 1),
        (1600, "jpeg 2000", 3),
        (1600, "contrast", 2),
        (1600, "blur", 5),
        ("shroom", "noise", 5),
        ("shroom", "blur", 2),
        ("shroom", "fnoise", 4),
        ("shroom", "jpeg", 1),
        ("child_swimming", "contrast", 4),
        ("child_swimming", "jpeg", 5),
        ("child_swimming", "fnoise", 1),
        ("child_swimming", "jpeg 2000", 2),
    ]
    rows: list[list[object]] = [CSIQ_HEADER]
    pixels, records = {}, []
    for ref_id, ref in enumerate(refs):
        for image, dst_type, level in entries:
            if image != ref:
                continue
            folder, token, idx = CSIQ_TYPES[dst_type]
            if folder_case == "upper" and folder in ("awgn", "blur", "jpeg"):
                folder = folder.upper()
            name = f"dst_imgs/{folder}/{image}.{token}.{level}.png"
            pixels[name] = write_image(base / name, 32, 32, rng)
            dmos, std = round(float(rng.uniform(0, 1)), 6), round(float(rng.uniform(0.01, 0.2)), 6)
            if (image, dst_type, level) == (1600, "noise", 1):
                dmos = 0.061989
            rows.append([image, idx, dst_type, level, std, dmos])
            records.append(ExpectedRecord(name, dmos, std, ref_id))
    by_distortion = [CSIQ_HEADER, *sorted(rows[1:], key=lambda r: (r[1], str(r[0])))]
    write_xlsx(
        base / "csiq.DMOS.xlsx", {"all_by_image": rows, "all_by_distortion": by_distortion}, first_row=4, first_column=4
    )
    return _expected("csiq", root, base, records, pixels)


def make_tid2013(root: Path, *, doubled: bool = False) -> ExpectedDataset:
    """TID2013: reference_images/ I01.BMP, I02.BMP but i25.bmp; distorted_images/ with two files
    spelled with an upper-case I on disk while mos_with_names.txt lists them lower-case; CRLF text
    files (`<MOS> <name>`, one std per line)."""
    rng = _rng("tid2013")
    base = _base(root, "tid2013", doubled)
    for ref in ("I01.BMP", "I02.BMP", "i25.bmp"):
        write_image(base / "reference_images" / ref, 32, 24, rng)
    listed = [
        "i01_01_1.bmp",
        "i01_08_3.bmp",
        "i01_24_5.bmp",
        "i01_13_2.bmp",
        "i02_01_1.bmp",
        "i02_03_4.bmp",
        "i02_17_5.bmp",
        "i02_22_2.bmp",
        "i25_01_1.bmp",
        "i25_10_3.bmp",
        "i25_16_4.bmp",
        "i25_24_5.bmp",
    ]
    on_disk = {"i02_03_4.bmp": "I02_03_4.bmp", "i25_10_3.bmp": "I25_10_3.bmp"}
    mos = [round(float(v), 5) for v in rng.uniform(0.24, 7.21, len(listed))]
    mos[0] = 5.51429
    std = [round(float(v), 5) for v in rng.uniform(0.1, 1.5, len(listed))]
    pixels, records = {}, []
    for i, name in enumerate(listed):
        disk = on_disk.get(name, name)
        pixels[f"distorted_images/{disk}"] = write_image(base / "distorted_images" / disk, 32, 24, rng)
        records.append(ExpectedRecord(f"distorted_images/{disk}", mos[i], std[i], i // 4))
    (base / "mos_with_names.txt").write_bytes(
        "".join(f"{m} {n}\r\n" for m, n in zip(mos, listed, strict=True)).encode()
    )
    (base / "mos.txt").write_bytes("".join(f"{m}\r\n" for m in mos).encode())
    (base / "mos_std.txt").write_bytes("".join(f"{s}\r\n" for s in std).encode())
    (base / "readme").write_text("TID2013 (miniature)\n", encoding="utf-8")
    return _expected("tid2013", root, base, records, pixels)


FIXTURES: dict[str, Callable[..., ExpectedDataset]] = {
    "livew": make_livew,
    "koniq": make_koniq,
    "spaq": make_spaq,
    "bid": make_bid,
    "rbid": make_rbid,
    "cid2013": make_cid2013,
    "kadid10k": make_kadid10k,
    "live": make_live,
    "csiq": make_csiq,
    "tid2013": make_tid2013,
}
