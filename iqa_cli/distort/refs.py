"""Pristine reference images for `iqa prepare distorted`: any folder of images, or a KADIS-700k download.

A folder holding `kadis700k_ref_imgs.csv` is read as KADIS-700k: the references are the `ref_im`
column, in the CSV's order, found in its `ref_imgs/` subfolder (as the authors' MATLAB generator
reads them). Any other folder is searched recursively for .jpg/.jpeg/.png/.bmp files (any letter
case), sorted by their relative path so the order, and with it every reference id, is reproducible.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from iqa_cli.errors import DataError

KADIS_CSV = "kadis700k_ref_imgs.csv"
KADIS_IMAGES = "ref_imgs"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class Reference:
    path: Path  # the image file
    name: str  # relative path without the suffix, '/'-separated; distorted names are '<name>_TT_LL.bmp'


def _kadis_references(root: Path, csv_path: Path) -> list[Reference]:
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
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
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(root).parts)]
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
