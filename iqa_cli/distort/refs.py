"""Pristine reference images for `iqa prepare distorted`: any folder of images, or a KADIS-700k download.

A folder holding `kadis700k_ref_imgs.csv` is read as KADIS-700k: the references are the `ref_im`
column, in the CSV's order, found in its `ref_imgs/` subfolder (as the authors' MATLAB generator
reads them). `authors_reference_lists` reads VIPNet's own lists instead (`dataset_ref_img.csv`, and
`dataset_ref_img_140k.csv` for type 27). Any other folder is searched recursively for
.jpg/.jpeg/.png/.bmp files (any letter case), sorted by their relative path so the order, and with
it every reference id, is reproducible.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from iqa_cli.errors import DataError
from iqa_cli.fsnames import hidden_name

KADIS_CSV = "kadis700k_ref_imgs.csv"
KADIS_IMAGES = "ref_imgs"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Reference:
    path: Path  # the image file
    name: str  # relative path without the suffix, '/'-separated; distorted names are '<name>_TT_LL.bmp'


@contextmanager
def _text_csv(csv_path: Path) -> Iterator[csv.DictReader[str]]:
    """A CSV reader whose decoding failures are one DataError naming the file (a binary file given as the
    list: a cache, an image), not a raw UnicodeDecodeError."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            yield csv.DictReader(handle)
    except UnicodeDecodeError:
        raise DataError("is not a UTF-8 text file (expected a CSV list of reference images)", path=csv_path) from None
    except csv.Error as exc:
        raise DataError(f"is not a valid CSV file ({exc})", path=csv_path) from None


def _kadis_references(root: Path, csv_path: Path) -> list[Reference]:
    with _text_csv(csv_path) as reader:
        if reader.fieldnames is None or "ref_im" not in [f.strip() for f in reader.fieldnames]:
            raise DataError("expected a 'ref_im' column (KADIS-700k reference list)", path=csv_path)
        column = next(f for f in reader.fieldnames if f.strip() == "ref_im")
        names = [row[column].strip() for row in reader if row.get(column, "").strip()]
    if not names:
        raise DataError("lists no reference images", path=csv_path)
    folder = root / KADIS_IMAGES
    refs, missing = [], []
    seen: set[str] = set()
    for name in names:
        if name in seen:
            continue  # the CSV may list a reference twice (one row per distortion type)
        seen.add(name)
        path = folder / name
        if not path.is_file():
            missing.append(name)
            continue
        refs.append(Reference(path, Path(name).with_suffix("").as_posix()))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"reference image '{missing[0]}'{more} listed in {KADIS_CSV} not found", path=folder)
    return refs


def list_references(root: str | Path) -> list[Reference]:
    """The references under `root` (see the module docstring); a one-line DataError when there are none."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError("reference folder not found (expected a folder of pristine images)", path=root)
    csv_path = root / KADIS_CSV
    if csv_path.is_file():
        return _kadis_references(root, csv_path)
    files = sorted(
        (p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    files = [p for p in files if not any(map(hidden_name, p.relative_to(root).parts))]
    if not files:
        raise DataError(f"no reference images ({', '.join(IMAGE_SUFFIXES)}) found below", path=root)
    refs = [Reference(p, p.relative_to(root).with_suffix("").as_posix()) for p in files]
    names: dict[str, Path] = {}
    for ref in refs:
        if ref.name in names:
            raise DataError(
                f"two references share the name '{ref.name}' ({names[ref.name].name} and {ref.path.name}); "
                "distorted images are named after the file name without its suffix",
                path=root,
            )
        names[ref.name] = ref.path
    return refs


LIST_COLUMNS = ("img_ref", "ref_im")  # VIPNet's lists / KADIS-700k's own CSV


def read_reference_list(csv_path: Path) -> list[str]:
    if not csv_path.is_file():
        raise DataError("reference list not found (expected a CSV with an img_ref column)", path=csv_path)
    with _text_csv(csv_path) as reader:
        fields = [f.strip() for f in reader.fieldnames or []]
        column = next((c for c in LIST_COLUMNS if c in fields), None)
        if column is None:
            raise DataError(f"expected an '{LIST_COLUMNS[0]}' column (VIPNet's reference list)", path=csv_path)
        key = (reader.fieldnames or [])[fields.index(column)]
        names = [row[key].strip() for row in reader if (row.get(key) or "").strip()]
    if not names:
        raise DataError("lists no reference images", path=csv_path)
    if len(set(names)) != len(names):
        raise DataError("lists a reference twice", path=csv_path)
    return names


def authors_reference_lists(
    root: str | Path, main: str | Path, walk: str | Path | None = None
) -> tuple[list[Reference], int]:
    """VIPNet's generator lists: (references, main count).

    `main` (`dataset_ref_img.csv`) names the references of every type but 27; `walk`
    (`dataset_ref_img_140k.csv`) the references walked in order for type 27. The authors' walk list
    begins with the main list, so the references are the walk list, the first `main count` of them
    the main list. Images are found in `root/ref_imgs/` (KADIS-700k's layout) or else in `root`."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError("reference folder not found (expected KADIS-700k's folder)", path=root)
    main_names = read_reference_list(Path(main).expanduser())
    names = main_names
    if walk is not None:
        names = read_reference_list(Path(walk).expanduser())
        if names[: len(main_names)] != main_names:
            raise DataError(
                f"must begin with the {len(main_names)} references of {Path(main).name}, in its order, as the "
                "authors' two lists do",
                path=walk,
            )
    folder = root / KADIS_IMAGES if (root / KADIS_IMAGES).is_dir() else root
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DataError(f"reference image '{missing[0]}'{more} of the reference list not found", path=folder)
    return [Reference(folder / name, Path(name).with_suffix("").as_posix()) for name in names], len(main_names)


def references_digest(refs: Sequence[Reference]) -> str:
    """A fingerprint of the reference list (names and order): parts and resumed runs must share it."""
    digest = hashlib.sha256()
    for ref in refs:
        digest.update(ref.name.encode("utf-8") + b"\n")
    return digest.hexdigest()


def shard_range(count: int, shard: tuple[int, int]) -> tuple[int, int]:
    """[start, stop) of the references of shard i of n (1-based i): contiguous, sizes differ by at most one."""
    index, total = shard
    return (index - 1) * count // total, index * count // total
