"""Each official-layout parser against its miniature fixture: names, order, exact scores, std, ref ids,
official split, and the dataset's quirks (doubled folders, drops, case, sheet layouts)."""

from __future__ import annotations

import inspect
import math
import shutil

import pytest

from iqa_cli.data.datasets import DATASETS, get_dataset
from iqa_cli.errors import DataError
from tests.data.fixtures import FIXTURES, ExpectedDataset


def assert_matches(records, expected: ExpectedDataset) -> None:
    assert [r.name for r in records] == expected.names
    for record, want in zip(records, expected.records, strict=True):
        assert record.path.is_absolute()
        assert record.path == expected.dataset_root / want.name
        assert record.path.is_file()
        assert record.score == want.score, record.name
        assert (math.isnan(record.std) and math.isnan(want.std)) or record.std == want.std, record.name
        assert record.ref_id == want.ref_id, record.name
        assert record.official_set == want.official_set, record.name
        assert record.flags == want.flags, record.name
        assert record.mos_zscore == want.mos_zscore or math.isnan(record.mos_zscore) and math.isnan(want.mos_zscore)
        if want.distribution is None:
            assert record.distribution is None, record.name
        else:
            assert record.distribution == pytest.approx(want.distribution, abs=1e-12), record.name
        assert isinstance(record.score, float) and isinstance(record.std, float)


def parse(expected: ExpectedDataset, root=None, **kwargs):
    return get_dataset(expected.dataset).parse(root or expected.root, **kwargs)


@pytest.mark.parametrize("dataset", sorted(FIXTURES))
def test_parser_matches_fixture(dataset, tmp_path):
    expected = FIXTURES[dataset](tmp_path)
    assert len(expected.records) >= 8
    assert_matches(parse(expected), expected)


@pytest.mark.parametrize("dataset", sorted(FIXTURES))
def test_parser_accepts_the_dataset_folder_itself(dataset, tmp_path):
    # KonIQ ships as separate archives (images, scores), so its "folder" is the one holding both.
    expected = FIXTURES[dataset](tmp_path, doubled=False) if dataset == "koniq" else FIXTURES[dataset](tmp_path)
    assert_matches(parse(expected, expected.dataset_root), expected)


@pytest.mark.parametrize("dataset", sorted(FIXTURES))
def test_parser_finds_doubled_folders(dataset, tmp_path):
    builder = FIXTURES[dataset]
    default = inspect.signature(builder).parameters["doubled"].default
    expected = builder(tmp_path, doubled=not default)
    assert_matches(parse(expected), expected)


@pytest.mark.parametrize("dataset", sorted(FIXTURES))
def test_missing_image_raises_or_is_reported(dataset, tmp_path):
    expected = FIXTURES[dataset](tmp_path)
    gone = expected.records[2].name
    expected.path(gone).unlink()
    with pytest.raises(DataError) as info:
        parse(expected)
    message = str(info.value)
    assert "\n" not in message and "missing" in message
    assert gone.rsplit("/", 1)[-1].lower() in message.lower()

    skipped: list[str] = []
    records = parse(expected, on_missing=skipped.append)
    assert len(skipped) == 1 and gone.rsplit("/", 1)[-1].lower() in skipped[0].lower()
    assert [r.name for r in records] == [n for n in expected.names if n != gone]


def test_registry_lists_every_parser_with_its_conventions():
    for name in FIXTURES:
        spec = DATASETS[name]
        assert spec.name == name
        assert "on_missing" in inspect.signature(spec.parse).parameters
        assert spec.expects and spec.title
        assert spec.default_resize == "none" or spec.default_resize.startswith("short:") or "x" in spec.default_resize
    assert {n for n, s in DATASETS.items() if s.reference_disjoint} >= {"kadid10k", "live", "csiq", "tid2013"}
    assert {n for n, s in DATASETS.items() if s.lower_better} >= {"live", "csiq"}
    assert not DATASETS["kadid10k"].lower_better and DATASETS["kadid10k"].native_range == (1.0, 5.0)
    assert get_dataset("LIVEC").name == "livew" and get_dataset("KonIQ-10k").name == "koniq"
    assert get_dataset("kadid-10k").name == "kadid10k" and get_dataset("tid").name == "tid2013"


# --- per-dataset quirks ----------------------------------------------------------------------


def test_livew_keeps_and_flags_the_seven_training_images_first(tmp_path):
    from iqa_cli.data.records import TRAINING_IMAGE

    expected = FIXTURES["livew"](tmp_path)
    records = parse(expected)
    assert [r.name for r in records[:7]] == [f"Images/trainingImages/t{k}.bmp" for k in range(1, 8)]
    assert all(r.flags == TRAINING_IMAGE for r in records[:7]) and not any(r.flags for r in records[7:])
    assert {r.name.rsplit(".", 1)[1] for r in records[7:]} == {"bmp", "JPG"}


def test_koniq_prefers_1024x768_and_reads_the_official_split(tmp_path):
    expected = FIXTURES["koniq"](tmp_path)
    records = parse(expected)
    assert all(r.name.startswith("1024x768/") for r in records)
    assert {r.official_set for r in records} == {"training", "validation", "test"}
    assert all(1.0 <= r.score <= 5.0 for r in records)  # the 1-5 MOS, not the sets file's z-score


@pytest.mark.parametrize(
    "variants",
    [
        {"folders": ("512x384",)},
        {"folders": ("512x384",), "doubled": False},
        {"sets_csv": False},
        {"folders": ("1024x768",), "sets_csv": False, "doubled": False},
    ],
)
def test_koniq_variants(tmp_path, variants):
    expected = FIXTURES["koniq"](tmp_path, **variants)
    assert_matches(parse(expected), expected)


def _rewrite_koniq_scores(expected: ExpectedDataset, edit) -> None:
    """Rewrite the fixture's scores CSV with `edit(header, rows) -> (header, rows)`."""
    import csv

    path = next(expected.root.rglob("koniq10k_scores_and_distributions.csv"))
    with open(path, encoding="utf-8", newline="") as f:
        header, *rows = list(csv.reader(f))
    header, rows = edit(header, rows)
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def test_koniq_rating_distributions_come_from_c1_to_c5(tmp_path):
    expected = FIXTURES["koniq"](tmp_path)
    records = parse(expected)
    for record in records:  # shares of the votes; their expectation is the 1-5 MOS
        assert len(record.distribution) == 5 and sum(record.distribution) == pytest.approx(1.0)
        assert sum(k * p for k, p in enumerate(record.distribution, 1)) == pytest.approx(record.score)

    def counts(header, rows):  # integer vote counts, as the official file has them
        return header, [[r[0], "2", "0", "6", "2", "0", *r[6:]] for r in rows]

    _rewrite_koniq_scores(expected, counts)
    assert parse(expected)[0].distribution == (0.2, 0.0, 0.6, 0.2, 0.0)

    def negative(header, rows):
        return header, [[r[0], "-1", *r[2:]] for r in rows]

    _rewrite_koniq_scores(expected, negative)
    with pytest.raises(DataError, match="line 2: rating counts c1..c5 must be non-negative"):
        parse(expected)

    def without_counts(header, rows):
        keep = [i for i, h in enumerate(header) if h not in ("c1", "c2", "c3", "c4", "c5")]
        return [header[i] for i in keep], [[r[i] for i in keep] for r in rows]

    _rewrite_koniq_scores(expected, without_counts)
    assert all(r.distribution is None for r in parse(expected))


def test_koniq_archive_named_image_folder(tmp_path):
    # esnthere's layout: koniq10k_1024x768/koniq10k_1024x768/<images>
    expected = FIXTURES["koniq"](tmp_path, folders=("1024x768",))
    inner = tmp_path / "koniq10k_1024x768" / "1024x768"
    inner.rename(tmp_path / "koniq10k_1024x768" / "koniq10k_1024x768")
    records = parse(expected)
    assert [r.name for r in records] == [n.replace("1024x768/", "koniq10k_1024x768/") for n in expected.names]


def test_spaq_xlsx_beside_testimage(tmp_path):
    expected = FIXTURES["spaq"](tmp_path, annotations=False)
    assert_matches(parse(expected), expected)


@pytest.mark.parametrize("variants", [{"nested": False}, {"std_column": True}])
def test_bid_variants(tmp_path, variants):
    expected = FIXTURES["bid"](tmp_path, **variants)
    records = parse(expected)
    assert_matches(records, expected)
    assert records[0].name.endswith("DatabaseImage0456.JPG")  # sheet order, not number order


def test_rbid_accepts_the_bid_layout(tmp_path):
    expected = FIXTURES["rbid"](tmp_path, layout="bid")
    assert_matches(parse(expected), expected)


def test_cid2013_source_ids_with_folder_prefix(tmp_path):
    expected = FIXTURES["cid2013"](tmp_path, prefixed_ids=True)
    records = parse(expected)
    assert_matches(records, expected)
    assert any(r.name.startswith("IS5/co8/") for r in records) and min(r.score for r in records) < 0


def test_kadid_csv_inside_images(tmp_path):
    expected = FIXTURES["kadid10k"](tmp_path, csv_in_images=True)
    records = parse(expected)
    assert_matches(records, expected)
    assert records[0].std == math.sqrt(0.496)  # std is the square root of the `var` column
    assert sorted({r.ref_id for r in records}) == [0, 1, 2]


def test_live_uses_realigned_dmos_and_drops_reference_rows(tmp_path):
    expected = FIXTURES["live"](tmp_path)
    records = parse(expected)
    assert len(records) == 10 and len(expected.dropped) == 972
    assert not {r.name for r in records} & set(expected.dropped)
    assert sorted({r.ref_id for r in records}) == [0, 1, 2, 3]


def test_live_falls_back_to_dmos_mat(tmp_path):
    expected = FIXTURES["live"](tmp_path, realigned=False)
    records = parse(expected)
    assert_matches(records, expected)
    assert all(math.isnan(r.std) for r in records)


def test_csiq_upper_case_folders(tmp_path):
    expected = FIXTURES["csiq"](tmp_path, folder_case="upper")
    records = parse(expected)
    assert_matches(records, expected)
    assert records[0].name == "dst_imgs/AWGN/1600.AWGN.1.png" and records[0].score == 0.061989


def test_tid2013_keeps_on_disk_spelling(tmp_path):
    expected = FIXTURES["tid2013"](tmp_path)
    names = [r.name for r in parse(expected)]
    assert "distorted_images/I02_03_4.bmp" in names and "distorted_images/i02_01_1.bmp" in names


def test_macosx_shadow_folders_are_ignored(tmp_path):
    expected = FIXTURES["livew"](tmp_path, doubled=False)
    shadow = tmp_path / "__MACOSX" / "ChallengeDB_release" / "Data"
    shadow.mkdir(parents=True)
    shutil.copy(expected.dataset_root / "Data" / "AllImages_release.mat", shadow / "AllImages_release.mat")
    assert_matches(parse(expected), expected)


def test_spaq_names_saved_as_numbers(tmp_path):
    from openpyxl import load_workbook

    expected = FIXTURES["spaq"](tmp_path)
    path = expected.dataset_root / "Annotations" / "MOS and Image attribute scores.xlsx"
    book = load_workbook(str(path))
    book.active["A2"] = 1  # '00001.jpg' re-saved as the number 1
    book.save(str(path))
    assert_matches(parse(expected), expected)


def test_find_file_takes_the_shallowest_copy_within_the_depth_limit(tmp_path):
    from iqa_cli.data.datasets._files import SEARCH_DEPTH, find_file

    deep = tmp_path.joinpath(*[f"d{k}" for k in range(SEARCH_DEPTH)])
    deep.mkdir(parents=True)
    (deep / "DMOS.CSV").write_text("x", encoding="utf-8")
    assert find_file(tmp_path, ["dmos.csv"]) == deep / "DMOS.CSV"  # case-insensitive, at the last level
    (tmp_path / "d0" / "dmos.csv").write_text("x", encoding="utf-8")
    assert find_file(tmp_path, ["dmos.csv"]) == tmp_path / "d0" / "dmos.csv"
    too_deep = tmp_path / "other" / "a" / "b" / "c" / "d"
    too_deep.mkdir(parents=True)
    (too_deep / "mos_with_names.txt").write_text("x", encoding="utf-8")
    with pytest.raises(DataError, match="not found"):
        find_file(tmp_path, ["mos_with_names.txt"])


def test_live_realigned_file_without_orgs_uses_dmos_mat_flags(tmp_path):
    from scipy.io import loadmat, savemat

    expected = FIXTURES["live"](tmp_path)
    path = expected.dataset_root / "dmos_realigned.mat"
    content = loadmat(str(path))
    savemat(str(path), {"dmos_new": content["dmos_new"], "dmos_std": content["dmos_std"]})
    assert_matches(parse(expected), expected)


def test_koniq_keeps_mos_zscore_beside_the_mos(tmp_path):
    """VIPNet's label; not a monotonic map of the 1-5 MOS, so it is read, not derived."""
    import csv

    expected = FIXTURES["koniq"](tmp_path)
    path = next(expected.root.rglob("koniq10k_scores_and_distributions.csv"))
    with open(path, encoding="utf-8", newline="") as f:
        given = {row["image_name"]: float(row["MOS_zscore"]) for row in csv.DictReader(f)}
    records = parse(expected)
    assert [r.mos_zscore for r in records] == [given[r.name.split("/", 1)[1]] for r in records]

    def malformed(header, rows):
        return header, [[*r[:-1], "n/a"] for r in rows]

    _rewrite_koniq_scores(expected, malformed)
    with pytest.raises(DataError, match="malformed MOS_zscore 'n/a' at line 2"):
        parse(expected)

    def without_zscore(header, rows):
        return header[:-1], [r[:-1] for r in rows]

    _rewrite_koniq_scores(expected, without_zscore)
    assert all(math.isnan(r.mos_zscore) for r in parse(expected))
