"""Shared helpers for the official-layout parsers: finding metadata, resolving image names, reading
.mat / .xlsx / .csv metadata, and validating scores.

Every failure is a one-line `DataError` naming the file involved. Parsers never decode images; they
only check that each listed image exists.
"""

from __future__ import annotations

import csv
import math
import os
import re
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np

from iqa_cli.data.records import Record
from iqa_cli.errors import DataError
from iqa_cli.fsnames import hidden_name, name_text

# Called with the relative name of each listed image that is not on disk; None means "raise".
OnMissing = Callable[[str], None] | None

# How deep below --root we look for metadata: enough for `root/Archive/Archive/Data/file.mat`.
SEARCH_DEPTH = 4


def _list_dir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        return []


def is_file(entry: os.DirEntry[str] | Path) -> bool:
    """Like `is_file()`, but a looping or dangling symbolic link is simply not a file."""
    try:
        return entry.is_file()
    except OSError:
        return False


def is_dir(entry: os.DirEntry[str] | Path) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def walk_dirs(root: Path, max_depth: int) -> Iterable[tuple[int, Path, list[os.DirEntry[str]]]]:
    """Yield (depth, directory, its sorted entries) breadth-first, shallowest first. Each folder is
    visited once, so symbolic links that loop (`up -> ..`, `a -> b -> a`) are skipped, not followed."""
    queue: deque[tuple[int, Path]] = deque([(0, root)])
    seen: set[tuple[int, int]] = set()
    while queue:
        depth, path = queue.popleft()
        try:
            stat = path.stat()
        except OSError:
            continue
        if (stat.st_dev, stat.st_ino) in seen:
            continue
        seen.add((stat.st_dev, stat.st_ino))
        entries = [e for e in _list_dir(path) if is_file(e) or is_dir(e)]
        yield depth, path, entries
        if depth < max_depth:
            for entry in entries:
                if is_dir(entry) and not hidden_name(entry.name):
                    queue.append((depth + 1, Path(entry.path)))


def fold(name: str) -> str:
    """A file name as compared when its exact spelling is not on disk: lower case, Unicode NFC. Archives
    made on macOS keep decomposed names (NFD: `e` + a combining accent) that a CSV typed elsewhere
    spells composed (NFC); the two look identical but differ byte by byte."""
    return unicodedata.normalize("NFC", name).lower()


def file_index(base: Path, max_depth: int) -> dict[str, Path]:
    """Folded file name (`fold`) -> path for every file under `base` (down to `max_depth`); shallowest wins."""
    index: dict[str, Path] = {}
    for _, _, entries in walk_dirs(base, max_depth):
        for entry in entries:
            if is_file(entry):
                index.setdefault(fold(name_text(entry.name)), Path(entry.path))
    return index


def check_root(root: Path) -> Path:
    """The user's --root as an absolute path; a one-line error if it is not a folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError("dataset root is not a folder", path=root)
    return root.absolute()


@overload
def find_file(
    root: Path,
    names: Sequence[str],
    *,
    max_depth: int = ...,
    required: Literal[True] = ...,
    match: Callable[[str], bool] | None = ...,
) -> Path: ...


@overload
def find_file(
    root: Path,
    names: Sequence[str],
    *,
    max_depth: int = ...,
    required: bool,
    match: Callable[[str], bool] | None = ...,
) -> Path | None: ...


def find_file(
    root: Path,
    names: Sequence[str],
    *,
    max_depth: int = SEARCH_DEPTH,
    required: bool = True,
    match: Callable[[str], bool] | None = None,
) -> Path | None:
    """Find a metadata file by name (case-insensitive) at the shallowest depth under `root`.

    `names` are tried in order of preference at each depth; `match` optionally accepts other names
    (e.g. a versioned file name). Two different copies at the same depth are ambiguous and refused,
    so the user can point --root at the one they mean.
    """
    wanted = [n.lower() for n in names]
    current_depth = -1
    found: list[Path] = []
    for depth, _, entries in walk_dirs(root, max_depth):
        if depth != current_depth:
            if found:
                break
            current_depth = depth
        files = [e for e in entries if is_file(e)]
        by_name = {e.name.lower(): e for e in files}
        hit = next((by_name[n] for n in wanted if n in by_name), None)
        if hit is None and match is not None:
            hit = next((e for e in files if match(e.name)), None)
        if hit is not None:
            found.append(Path(hit.path))
    if len(found) > 1:
        listed = ", ".join(str(p) for p in found[:3])
        raise DataError(f"found {len(found)} copies of {names[0]} ({listed}); pass --root pointing at one", path=root)
    if found:
        return found[0]
    if required:
        raise DataError(f"metadata file '{names[0]}' not found (searched {max_depth} folder levels deep)", path=root)
    return None


def find_dirs(root: Path, names: Sequence[str], *, max_depth: int = SEARCH_DEPTH) -> list[Path]:
    """All folders named one of `names` (case-insensitive) under `root`, shallowest first."""
    wanted = {n.lower() for n in names}
    out: list[Path] = []
    for _, _, entries in walk_dirs(root, max_depth):
        out.extend(Path(e.path) for e in entries if is_dir(e) and e.name.lower() in wanted)
    return out


class CaseInsensitiveTree:
    """Resolves relative paths under a base folder with case-insensitive matching per component.

    Official archives are inconsistent (TID2013 `I01.BMP` vs `i25.bmp`, CSIQ `AWGN/` vs `awgn/`); an
    exact match wins, otherwise the one name that matches ignoring case and Unicode normalisation
    (`fold`). Two names that differ only in case (`IMG1.png` and `img1.png`, distinct files on Linux)
    make a third spelling ambiguous: an error, not a guess. Folder listings are cached, so resolving
    10k names costs one listing per folder.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self._listings: dict[Path, tuple[dict[str, str], dict[str, list[str]]]] = {}

    def _listing(self, folder: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
        """(text name -> on-disk name, folded text name -> on-disk names) of `folder`'s entries: names are
        compared as text (`name_text`), so a Latin-1 or C locale still finds `café.jpg`."""
        if folder not in self._listings:
            texts = {name_text(e.name): e.name for e in _list_dir(folder)}
            lower: dict[str, list[str]] = {}
            for text, name in texts.items():
                lower.setdefault(fold(text), []).append(name)
            self._listings[folder] = (texts, lower)
        return self._listings[folder]

    def child(self, folder: Path, name: str) -> Path | None:
        """The entry of `folder` that the text `name` (as a metadata file spells it) names, or None."""
        exact, lower = self._listing(folder)
        if name in exact:
            return folder / exact[name]
        spellings = lower.get(fold(name), [])
        if len(spellings) > 1:
            shown = ", ".join(sorted(name_text(spelling) for spelling in spellings))
            raise DataError(
                f"'{name}' matches {len(spellings)} files that differ only in case ({shown}); name one exactly",
                path=folder,
            )
        return folder / spellings[0] if spellings else None

    def resolve(self, relative: str) -> Path | None:
        """The on-disk path for `relative` ('/'-separated), or None if any component is missing."""
        path = self.base
        for part in relative.replace("\\", "/").split("/"):
            if part in ("", "."):
                continue
            found = self.child(path, part)
            if found is None:
                return None
            path = found
        return path

    def resolve_file(self, relative: str) -> Path | None:
        path = self.resolve(relative)
        return path if path is not None and is_file(path) else None


def relative_name(path: Path, dataset_root: Path) -> str:
    """The cache name of an image: its path relative to the dataset root, '/'-separated, as text."""
    return name_text(path.relative_to(dataset_root).as_posix())


def report_missing(
    name: str, *, expected: Path | None, metadata: Path, on_missing: OnMissing, searched: Path | None = None
) -> None:
    """A listed image is not on disk: raise, or tell the caller and let the parser skip the row.

    `expected` is where the image should be; parsers that search sub-folders pass `searched` instead.
    """
    if on_missing is None:
        if expected is not None:
            what = "is not a regular file (a pipe, socket or device)" if expected.exists() else "is missing"
            raise DataError(f"image listed in {metadata.name} {what} (use --skip-bad to skip it)", path=expected)
        raise DataError(
            f"image {name} listed in {metadata.name} is missing from {searched} and its sub-folders"
            " (use --skip-bad to skip it)",
            path=metadata,
        )
    on_missing(name)


def show(value: Any) -> str:
    """A metadata value for an error message: text quoted, numbers plain (no numpy reprs)."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, np.generic):
        value = value.item()
    return "an empty cell" if value is None else str(value)


# A number as a CSV or spreadsheet writes one. Python's float() also takes '1_0' (10), full-width
# digits and 'infinity': a typo or a stray character must not become a score.
_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf)", re.IGNORECASE | re.ASCII)


# The largest score a cache can store (its scores and std are float32), and the smallest but 0: below it a
# float32 loses digits, and from about 7e-46 it is 0, which would turn distinct scores into one.
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def parse_number(text: str) -> float:
    """A plain decimal number written as text (surrounding spaces allowed), else ValueError."""
    stripped = text.strip()
    if not _DECIMAL.fullmatch(stripped):
        raise ValueError(f"not a decimal number: {text!r}")
    return float(stripped)


def to_score(value: Any, *, source: Path, where: str, what: str = "score") -> float:
    """A finite float from a metadata cell, or a one-line error naming the file and row."""
    if isinstance(value, bool):
        value = None
    try:
        number = parse_number(value) if isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        raise DataError(f"malformed {what} {show(value)} at {where} (expected a number)", path=source) from None
    if not math.isfinite(number):
        raise DataError(f"malformed {what} {show(value)} at {where} (expected a finite number)", path=source)
    if abs(number) > FLOAT32_MAX:  # the cache stores 32-bit floats: 1e39 would be stored as inf
        raise DataError(
            f"{what} {show(value)} at {where} is out of range (a cache stores scores as 32-bit floats, "
            f"at most {FLOAT32_MAX:.3g} in size)",
            path=source,
        )
    if 0 < abs(number) < FLOAT32_TINY:
        raise DataError(
            f"{what} {show(value)} at {where} is too small to keep (a cache stores scores as 32-bit floats, at "
            f"least {FLOAT32_TINY:.3g} in size unless 0): rescale the scores",
            path=source,
        )
    return number


def cell_text(value: Any) -> str:
    """A spreadsheet cell as text; whole numbers stored as floats (1600.0) lose the '.0'."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# --- .mat (MATLAB Level-5) -------------------------------------------------------------------


def load_mat(path: Path, variables: Sequence[str], optional: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Read the named variables (and those of `optional` that exist) from a MATLAB v5/v7 .mat file."""
    from scipy.io import loadmat  # scipy is heavy; only parsers that need it pay the import

    try:
        content = loadmat(str(path))
    except NotImplementedError:
        raise DataError(
            "is a MATLAB v7.3 (HDF5) file; the official release is v5 (re-save with -v7)", path=path
        ) from None
    except Exception as exc:  # scipy raises ValueError/TypeError/OSError for damaged files
        raise DataError(f"cannot read MATLAB file ({type(exc).__name__}: {exc})", path=path) from None
    missing = [v for v in variables if v not in content]
    if missing:
        present = sorted(k for k in content if not k.startswith("__"))
        raise DataError(f"has no variable {missing[0]!r} (found: {', '.join(present) or 'none'})", path=path)
    return {v: content[v] for v in (*variables, *optional) if v in content}


def _cell_string(cell: Any) -> str:
    # A cell holding a char row loads as a 1-element str array; an empty char as an empty array.
    while isinstance(cell, np.ndarray):
        if cell.size == 0:
            return ""
        if cell.size != 1:
            raise TypeError  # a cell holding several values is not one name
        if cell.dtype.kind == "U":
            return str(cell.item()).strip()
        cell = cell.ravel()[0]
    if isinstance(cell, str):
        return cell.strip()
    raise TypeError


def mat_strings(array: np.ndarray, *, path: Path, variable: str) -> list[str]:
    """A cell array of strings (any vector shape) or a char matrix (one name per row) as a list."""
    try:
        if array.dtype.kind == "U":  # char matrix: rows padded with spaces to equal length
            return [str(s).strip() for s in np.atleast_1d(array).ravel()]
        if array.dtype == object and (array.ndim <= 1 or min(array.shape) <= 1):
            return [_cell_string(c) for c in array.ravel()]
    except TypeError:
        pass
    raise DataError(f"variable {variable!r} is not a list of strings (shape {array.shape})", path=path)


def mat_vector(array: np.ndarray, *, path: Path, variable: str) -> np.ndarray:
    """A numeric row/column vector as a 1-D float64 array."""
    if array.dtype.kind not in "fiub" or (array.ndim == 2 and min(array.shape) > 1) or array.ndim > 2:
        raise DataError(f"variable {variable!r} is not a numeric vector (shape {array.shape})", path=path)
    return np.asarray(array, dtype=np.float64).ravel()


def mat_matrix(array: np.ndarray, *, path: Path, variable: str) -> np.ndarray:
    """A numeric 2-D matrix as float64."""
    if array.dtype.kind not in "fiub" or array.ndim != 2:
        raise DataError(f"variable {variable!r} is not a numeric matrix (shape {array.shape})", path=path)
    return np.asarray(array, dtype=np.float64)


def check_lengths(path_by_name: dict[str, tuple[Path, int]]) -> int:
    """All metadata vectors must have one entry per image; returns the common length."""
    lengths = {length for _, length in path_by_name.values()}
    if len(lengths) > 1:
        detail = ", ".join(f"{name}={length}" for name, (_, length) in path_by_name.items())
        first = next(iter(path_by_name.values()))[0]
        raise DataError(f"metadata lengths differ ({detail}); expected one entry per image", path=first)
    return lengths.pop()


# --- .xlsx -----------------------------------------------------------------------------------


def _norm_header(value: Any) -> str:
    return " ".join(cell_text(value).split()).lower()


@dataclass(frozen=True)
class XlsxTable:
    """The data rows below a located header row: `rows` are (spreadsheet row number, {header: value})."""

    path: Path
    sheet: str
    headers: tuple[str, ...]  # normalised (lower-case, single spaces) header texts
    rows: list[tuple[int, dict[str, Any]]]

    def column(self, *candidates: str) -> str | None:
        """The first header among `candidates` (normalised) present in the table."""
        for c in candidates:
            if _norm_header(c) in self.headers:
                return _norm_header(c)
        return None


def read_xlsx_table(
    path: Path,
    *,
    sheet: str | None,
    header: str,
    required: Sequence[str],
    search_rows: int = 50,
) -> XlsxTable:
    """Read one sheet of an .xlsx file as a table whose header row contains the cell `header`.

    The header row is found by searching the first `search_rows` rows for that cell (CSIQ's header
    sits on row 4 behind blank columns; CID2013's position is unverified). Headers match ignoring
    case and repeated spaces. Data rows whose cells are all blank are skipped.
    """
    from openpyxl import load_workbook

    try:
        book = load_workbook(str(path), read_only=True, data_only=True)
    except Exception as exc:  # zipfile/openpyxl errors for damaged or non-xlsx files
        raise DataError(f"cannot read Excel file ({type(exc).__name__}: {exc})", path=path) from None
    try:
        if sheet is None:
            ws = book.worksheets[0]
        elif sheet in book.sheetnames:
            ws = book[sheet]
        else:
            raise DataError(f"has no sheet {sheet!r} (found: {', '.join(book.sheetnames)})", path=path)
        # Some writers store a wrong sheet dimension, which would truncate a read-only scan.
        ws.reset_dimensions()
        rows = ws.iter_rows(min_row=1, min_col=1, values_only=True)
        key = _norm_header(header)
        header_cells: list[str] | None = None
        header_row = 0
        for number, row in enumerate(rows, start=1):
            if number > search_rows:
                break
            texts = [_norm_header(v) for v in row]
            if key in texts:
                header_cells, header_row = texts, number
                break
        if header_cells is None:
            raise DataError(
                f"sheet {ws.title!r} has no header row containing {header!r} in its first {search_rows} rows",
                path=path,
            )
        for name in required:
            if _norm_header(name) not in header_cells:
                raise DataError(
                    f"sheet {ws.title!r} has no column {name!r} in its header (row {header_row})", path=path
                )
        index: dict[str, int] = {}
        for i, text in enumerate(header_cells):
            if text:
                index.setdefault(text, i)
        data: list[tuple[int, dict[str, Any]]] = []
        for number, row in enumerate(rows, start=header_row + 1):
            values = {text: (row[i] if i < len(row) else None) for text, i in index.items()}
            if all(v is None or (isinstance(v, str) and not v.strip()) for v in values.values()):
                continue
            data.append((number, values))
        return XlsxTable(path=path, sheet=ws.title, headers=tuple(index), rows=data)
    finally:
        book.close()


# --- .csv / .txt -----------------------------------------------------------------------------


def read_csv_table(path: Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """A header-first CSV as (line number, {column: text}); header names are stripped."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            try:
                header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise DataError("is empty (expected a header row)", path=path) from None
            for name in required:
                if name not in header:
                    raise DataError(f"has no column {name!r} (header: {','.join(header)})", path=path)
            out = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                out.append(
                    (reader.line_num, {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)})
                )
            return out
    except UnicodeDecodeError:
        raise DataError("is not a UTF-8 text file", path=path) from None
    except csv.Error as exc:
        raise DataError(f"is not a valid CSV file ({exc})", path=path) from None


def read_text_lines(path: Path) -> list[tuple[int, list[str]]]:
    """Whitespace-split non-blank lines as (line number, fields)."""
    try:
        text = path.read_text(encoding="utf-8-sig", errors="strict")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    return [(i, line.split()) for i, line in enumerate(text.splitlines(), start=1) if line.strip()]


def first_seen_ids(keys: Iterable[str]) -> list[int]:
    """0-based ids numbering distinct keys in order of first appearance."""
    ids: dict[str, int] = {}
    return [ids.setdefault(k, len(ids)) for k in keys]


# --- rows -> records -------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One metadata row before its image is looked up on disk."""

    relative: str  # expected path below the dataset root, as the metadata spells it
    score: float
    std: float = math.nan
    ref_key: str | None = None  # reference image identity (FR datasets); numbered in order of appearance
    official_set: str | None = None
    distribution: tuple[float, ...] | None = None  # rating shares per category (KonIQ c1..c5)
    mos_zscore: float = math.nan  # KonIQ's MOS_zscore (see Record)
    flags: int = 0  # bits of iqa_cli.data.records (TRAINING_IMAGE, ...)
    reference: str | None = None  # the reference image's expected path below the root (FR datasets)


def build_records(
    rows: Sequence[Row],
    *,
    dataset_root: Path,
    metadata: Path,
    on_missing: OnMissing,
    tree: CaseInsensitiveTree | None = None,
) -> list[Record]:
    """Resolve each row's image (case-insensitively) and number the references; keeps row order. A
    reference file that is not there is no error (its digest stays unknown): only the images are scored."""
    tree = tree or CaseInsensitiveTree(dataset_root)
    references: dict[str, Path | None] = {}
    for row in rows:
        if row.reference is not None and row.reference not in references:
            references[row.reference] = tree.resolve_file(row.reference)
    kept: list[tuple[Row, Path]] = []
    for row in rows:
        path = tree.resolve_file(row.relative)
        if path is None:
            report_missing(row.relative, expected=dataset_root / row.relative, metadata=metadata, on_missing=on_missing)
            continue
        kept.append((row, path))
    with_refs = [row.ref_key is not None for row, _ in kept]
    ref_ids = first_seen_ids(row.ref_key or "" for row, _ in kept) if any(with_refs) else [-1] * len(kept)
    return [
        Record(
            path=path,
            name=relative_name(path, dataset_root),
            score=row.score,
            std=row.std,
            ref_id=ref_id,
            official_set=row.official_set,
            distribution=row.distribution,
            mos_zscore=row.mos_zscore,
            flags=row.flags,
            reference_path=references.get(row.reference) if row.reference is not None else None,
        )
        for (row, path), ref_id in zip(kept, ref_ids, strict=True)
    ]
