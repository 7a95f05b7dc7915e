"""`iqa models`: every registered network with its parameter count and input layout."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from iqa_cli.cli.main import app
from iqa_cli.models import model_names
from tests.reference_fixtures import load_fixture

runner = CliRunner()


def listing() -> dict[str, dict]:
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_json_lists_every_registered_network():
    rows = listing()
    assert set(rows) == set(model_names())
    assert {"vtiqa", "vtiqa-org", "vtiqa-org-backbone", "vtiqa-org-fusion", "vtiqa-org-selection", "ieit"} <= set(rows)
    for name, row in rows.items():
        assert isinstance(row["parameters"], int) and row["parameters"] > 0, name
        assert row["inputs"] and row["description"], name
    assert "(B,3,224,224)" in rows["vtiqa"]["inputs"]


def test_parts_add_up_to_the_original_vtiqa():
    rows = listing()
    parts = sum(rows[f"vtiqa-org-{part}"]["parameters"] for part in ("backbone", "fusion", "selection"))
    assert parts == rows["vtiqa-org"]["parameters"]


@pytest.mark.reference
@pytest.mark.parametrize(("name", "fixture"), [("vtiqa", "vtiqa"), ("vtiqa-org", "vtiqa_org"), ("ieit", "ieit")])
def test_counts_match_the_authors_networks(name, fixture):
    manifest, _ = load_fixture(fixture)
    assert listing()[name]["parameters"] == manifest["num_parameters_elements"]


def test_table_output():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    for name in ("vtiqa", "vtiqa-org-fusion", "ieit"):
        assert name in result.stdout
    rows = listing()
    assert f"{rows['vtiqa']['parameters']:,}" in result.stdout
    assert "[f_global," in result.stdout  # square brackets in descriptions are text, not rich markup
