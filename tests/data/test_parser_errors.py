"""Bad input to the official-layout parsers: each failure is one DataError line naming the file."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
from openpyxl import load_workbook
from scipy.io import loadmat, savemat

from iqa_cli.data.datasets import get_dataset
from iqa_cli.errors import DataError
from tests.data.fixtures import FIXTURES, ExpectedDataset


def parse_error(expected: ExpectedDataset, root=None) -> str:
    with pytest.raises(DataError) as info:
        get_dataset(expected.dataset).parse(root or expected.root)
    message = str(info.value)
    assert "\n" not in message
    return message


def edit_mat(path, **changes) -> None:
    content = {k: v for k, v in loadmat(str(path)).items() if not k.startswith("__")}
    content.update(changes)
    savemat(str(path), content, format="5")


def edit_xlsx(path, sheet: str, edit) -> None:
    book = load_workbook(str(path))
    edit(book[sheet])
    book.save(str(path))


def cell_of(ws, text):
    for row in ws.iter_rows():
        for cell in row:
            if cell.value == text:
                return cell
    raise AssertionError(text)


def replace_line(path, index: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[index] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --- metadata not found ----------------------------------------------------------------------

METADATA = {
    "livew": "AllImages_release.mat",
    "koniq": "koniq10k_scores_and_distributions.csv",
    "spaq": "MOS and Image attribute scores.xlsx",
    "bid": "DatabaseGrades.xlsx",
    "rbid": "RBID_mos.mat",
    "cid2013": "CID2013 data - version 12112014.xlsx",
    "kadid10k": "dmos.csv",
    "live": "refnames_all.mat",
    "csiq": "csiq.DMOS.xlsx",
    "tid2013": "mos_with_names.txt",
}


@pytest.mark.parametrize("dataset", sorted(METADATA))
def test_metadata_not_found_names_file_and_root(dataset, tmp_path):
    (tmp_path / "empty" / "nested").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        get_dataset(dataset).parse(tmp_path / "empty")
    message = str(info.value)
    assert METADATA[dataset] in message and str(tmp_path / "empty") in message and "not found" in message


def test_root_that_is_not_a_folder(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        get_dataset("livew").parse(tmp_path / "nope")


@pytest.mark.parametrize(
    ("dataset", "companion"),
    [("livew", "AllMOS_release.mat"), ("livew", "AllStdDev_release.mat"), ("tid2013", "mos_std.txt")],
)
def test_companion_metadata_file_missing(dataset, companion, tmp_path):
    expected = FIXTURES[dataset](tmp_path)
    next(expected.root.rglob(companion)).unlink()
    assert companion in parse_error(expected)


def test_live_without_any_dmos_file(tmp_path):
    expected = FIXTURES["live"](tmp_path)
    (expected.dataset_root / "dmos.mat").unlink()
    (expected.dataset_root / "dmos_realigned.mat").unlink()
    message = parse_error(expected)
    assert "dmos_realigned.mat" in message and "dmos.mat" in message


def test_koniq_sets_csv_alone_says_which_file_is_needed(tmp_path):
    expected = FIXTURES["koniq"](tmp_path)
    next(tmp_path.rglob("koniq10k_scores_and_distributions.csv")).unlink()
    message = parse_error(expected)
    assert "koniq10k_scores_and_distributions.csv" in message and "koniq10k_distributions_sets.csv" in message


def test_koniq_without_image_folder(tmp_path):
    expected = FIXTURES["koniq"](tmp_path, folders=())
    message = parse_error(expected)
    assert "1024x768" in message and "koniq10k_scores_and_distributions.csv" in message


def test_koniq_sets_csv_lacking_an_image(tmp_path):
    expected = FIXTURES["koniq"](tmp_path)
    sets = tmp_path / "koniq10k_distributions_sets.csv"
    sets.write_text("\n".join(sets.read_text(encoding="utf-8").splitlines()[:-1]) + "\n", encoding="utf-8")
    assert "koniq10k_distributions_sets.csv" in parse_error(expected)


def test_spaq_without_testimage_folder(tmp_path):
    expected = FIXTURES["spaq"](tmp_path)
    shutil.rmtree(expected.dataset_root / "TestImage")
    assert "TestImage" in parse_error(expected)


def test_two_copies_of_the_metadata_are_refused(tmp_path):
    FIXTURES["kadid10k"](tmp_path / "a")
    FIXTURES["kadid10k"](tmp_path / "b")
    with pytest.raises(DataError, match="copies of dmos.csv"):
        get_dataset("kadid10k").parse(tmp_path)


# --- malformed scores ------------------------------------------------------------------------


def _livew(expected):
    path = expected.dataset_root / "Data" / "AllMOS_release.mat"
    values = loadmat(str(path))["AllMOS_release"].copy()
    values[0, 9] = np.nan
    edit_mat(path, AllMOS_release=values)
    return "AllMOS_release.mat"


def _koniq(expected):
    path = next(expected.root.rglob("koniq10k_scores_and_distributions.csv"))
    lines = path.read_text(encoding="utf-8").splitlines()
    fields = lines[3].split(",")
    fields[7] = "n/a"
    replace_line(path, 3, ",".join(fields))
    return "koniq10k_scores_and_distributions.csv"


def _spaq(expected):
    path = expected.dataset_root / "Annotations" / "MOS and Image attribute scores.xlsx"
    edit_xlsx(path, "Sheet1", lambda ws: setattr(ws["B4"], "value", "good"))
    return "MOS and Image attribute scores.xlsx"


def _bid(expected):
    path = expected.dataset_root / "DatabaseGrades.xlsx"
    edit_xlsx(path, "Plan1", lambda ws: setattr(ws["B3"], "value", None))
    return "DatabaseGrades.xlsx"


def _rbid(expected):
    path = expected.dataset_root / "RBID_mos.mat"
    table = loadmat(str(path))["RBID_mos"].copy()
    table[2, 1] = np.inf
    edit_mat(path, RBID_mos=table)
    return "RBID_mos.mat"


def _cid2013(expected):
    path = expected.dataset_root / "CID2013 data - version 12112014.xlsx"
    edit_xlsx(path, "CID2013 MOS", lambda ws: setattr(ws["C6"], "value", "#N/A"))
    return "CID2013 data - version 12112014.xlsx"


def _kadid10k(expected):
    path = expected.dataset_root / "dmos.csv"
    replace_line(path, 2, "I01_01_03.png,I01.png,,0.3")
    return "dmos.csv"


def _live(expected):
    path = expected.dataset_root / "dmos_realigned.mat"
    values = loadmat(str(path))["dmos_new"].copy()
    values[0, 229] = np.nan  # a kept row (jpeg/img3)
    edit_mat(path, dmos_new=values)
    return "dmos_realigned.mat"


def _csiq(expected):
    path = expected.dataset_root / "csiq.DMOS.xlsx"
    edit_xlsx(path, "all_by_image", lambda ws: setattr(ws["I6"], "value", "x"))
    return "csiq.DMOS.xlsx"


def _tid2013(expected):
    path = expected.dataset_root / "mos_with_names.txt"
    replace_line(path, 5, "5,1 i02_03_4.bmp")
    return "mos_with_names.txt"


MALFORM = {f.__name__[1:]: f for f in (_livew, _koniq, _spaq, _bid, _rbid, _cid2013, _kadid10k, _live, _csiq, _tid2013)}


@pytest.mark.parametrize("dataset", sorted(MALFORM))
def test_malformed_score(dataset, tmp_path):
    expected = FIXTURES[dataset](tmp_path)
    file_name = MALFORM[dataset](expected)
    message = parse_error(expected)
    assert "malformed" in message and file_name in message


def test_kadid_negative_variance(tmp_path):
    expected = FIXTURES["kadid10k"](tmp_path)
    replace_line(expected.dataset_root / "dmos.csv", 1, "I01_01_01.png,I01.png,4.57,-0.1")
    assert "negative variance" in parse_error(expected)


def test_reference_rows_with_bad_scores_are_ignored(tmp_path):
    # LIVE's dropped rows (orgs == 1) may hold anything; only kept rows are validated.
    expected = FIXTURES["live"](tmp_path)
    path = expected.dataset_root / "dmos_realigned.mat"
    values = loadmat(str(path))["dmos_new"].copy()
    values[0, 2] = np.nan  # jp2k/img3 is a reference copy
    edit_mat(path, dmos_new=values)
    records = get_dataset("live").parse(expected.root)
    assert [r.name for r in records] == expected.names and all(math.isfinite(r.score) for r in records)


# --- sheets and headers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "file_name", "sheet"),
    [
        ("bid", "DatabaseGrades.xlsx", "Plan1"),
        ("cid2013", "CID2013 data - version 12112014.xlsx", "CID2013 MOS"),
        ("csiq", "csiq.DMOS.xlsx", "all_by_image"),
    ],
)
def test_wrong_sheet(dataset, file_name, sheet, tmp_path):
    expected = FIXTURES[dataset](tmp_path)
    edit_xlsx(expected.dataset_root / file_name, sheet, lambda ws: setattr(ws, "title", "Sheet9"))
    message = parse_error(expected)
    assert file_name in message and repr(sheet) in message and "Sheet9" in message


@pytest.mark.parametrize(
    ("dataset", "file_name", "sheet", "header"),
    [
        ("spaq", "Annotations/MOS and Image attribute scores.xlsx", "Sheet1", "Image name"),
        ("bid", "DatabaseGrades.xlsx", "Plan1", "Image Number"),
        ("cid2013", "CID2013 data - version 12112014.xlsx", "CID2013 MOS", "Source_ID"),
        ("csiq", "csiq.DMOS.xlsx", "all_by_image", "image"),
    ],
)
def test_header_not_found(dataset, file_name, sheet, header, tmp_path):
    expected = FIXTURES[dataset](tmp_path)
    edit_xlsx(expected.dataset_root / file_name, sheet, lambda ws: setattr(cell_of(ws, header), "value", "renamed"))
    message = parse_error(expected)
    assert file_name.rsplit("/", 1)[-1] in message and repr(header) in message


def test_missing_score_column(tmp_path):
    expected = FIXTURES["cid2013"](tmp_path)
    path = expected.dataset_root / "CID2013 data - version 12112014.xlsx"
    edit_xlsx(path, "CID2013 MOS", lambda ws: setattr(cell_of(ws, "Realigned MOS"), "value", "MOS2"))
    assert "'Realigned MOS'" in parse_error(expected)


def test_kadid_missing_column(tmp_path):
    expected = FIXTURES["kadid10k"](tmp_path)
    replace_line(expected.dataset_root / "dmos.csv", 0, "dist_img,ref_img,dmos")
    assert "'var'" in parse_error(expected)


def test_csiq_unknown_distortion(tmp_path):
    expected = FIXTURES["csiq"](tmp_path)
    edit_xlsx(expected.dataset_root / "csiq.DMOS.xlsx", "all_by_image", lambda ws: setattr(ws["F5"], "value", "haze"))
    assert "haze" in parse_error(expected)


def test_bid_duplicate_image_number(tmp_path):
    expected = FIXTURES["bid"](tmp_path)
    edit_xlsx(expected.dataset_root / "DatabaseGrades.xlsx", "Plan1", lambda ws: setattr(ws["A3"], "value", 456))
    assert "appears twice" in parse_error(expected)


def test_bid_missing_image_names_folder_searched(tmp_path):
    expected = FIXTURES["bid"](tmp_path)
    expected.path(expected.names[0]).unlink()
    message = parse_error(expected)
    assert "DatabaseImage0456.JPG" in message and "DatabaseGrades.xlsx" in message


# --- .mat lengths and contents ---------------------------------------------------------------


def test_livew_mismatched_lengths(tmp_path):
    expected = FIXTURES["livew"](tmp_path)
    path = expected.dataset_root / "Data" / "AllStdDev_release.mat"
    edit_mat(path, AllStdDev_release=loadmat(str(path))["AllStdDev_release"][:, :-1])
    message = parse_error(expected)
    assert "lengths differ" in message and "AllStdDev_release.mat=16" in message


def test_live_mismatched_lengths(tmp_path):
    expected = FIXTURES["live"](tmp_path)
    path = expected.dataset_root / "refnames_all.mat"
    edit_mat(path, refnames_all=loadmat(str(path))["refnames_all"][:, :-5])
    assert "lengths differ" in parse_error(expected)


def test_live_wrong_row_count(tmp_path):
    expected = FIXTURES["live"](tmp_path)
    path = expected.dataset_root / "dmos_realigned.mat"
    content = loadmat(str(path))
    edit_mat(path, **{k: content[k][:, :900] for k in ("dmos_new", "dmos_std", "orgs")})
    edit_mat(
        expected.dataset_root / "refnames_all.mat",
        refnames_all=loadmat(str(expected.dataset_root / "refnames_all.mat"))["refnames_all"][:, :900],
    )
    assert "982" in parse_error(expected)


def test_rbid_mismatched_lengths_and_bad_index(tmp_path):
    expected = FIXTURES["rbid"](tmp_path)
    path = expected.dataset_root / "RBID_mos.mat"
    table = loadmat(str(path))["RBID_mos"]
    edit_mat(path, RBID_mos=table[:-1])
    assert "lengths differ" in parse_error(expected)
    bad = table.copy()
    bad[0, 0] = 99
    edit_mat(path, RBID_mos=bad)
    assert "outside 1..10" in parse_error(expected)


def test_tid_mismatched_lengths(tmp_path):
    expected = FIXTURES["tid2013"](tmp_path)
    path = expected.dataset_root / "mos_std.txt"
    path.write_text("\n".join(path.read_text(encoding="utf-8").splitlines()[:-1]) + "\n", encoding="utf-8")
    assert "lengths differ" in parse_error(expected)


def test_missing_mat_variable(tmp_path):
    expected = FIXTURES["livew"](tmp_path)
    path = expected.dataset_root / "Data" / "AllMOS_release.mat"
    savemat(str(path), {"mos": np.zeros((1, 17))})
    message = parse_error(expected)
    assert "'AllMOS_release'" in message and "mos" in message


def test_names_variable_that_is_not_strings(tmp_path):
    expected = FIXTURES["livew"](tmp_path)
    edit_mat(expected.dataset_root / "Data" / "AllImages_release.mat", AllImages_release=np.zeros((17, 3)))
    assert "not a list of strings" in parse_error(expected)


def test_damaged_files(tmp_path):
    expected = FIXTURES["livew"](tmp_path)
    (expected.dataset_root / "Data" / "AllMOS_release.mat").write_bytes(b"not a mat file at all" * 10)
    assert "cannot read MATLAB file" in parse_error(expected)
    expected = FIXTURES["bid"](tmp_path / "b")
    (expected.dataset_root / "DatabaseGrades.xlsx").write_bytes(b"PK\x03\x04 truncated")
    assert "cannot read Excel file" in parse_error(expected)
