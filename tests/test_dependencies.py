"""`iqa_cli.dependencies`: installed packages below iqa's requirements, named on an unexpected error."""

from __future__ import annotations

from importlib import metadata

from typer.testing import CliRunner

from iqa_cli import dependencies
from iqa_cli.cli.main import app
from iqa_cli.dependencies import checked_requirements, release, unmet_requirements


def test_release_compares_versions_by_their_numbers():
    assert release("2.11.0+cu130") == release("2.11") == (2, 11)
    assert release("2.6.0rc1") == release("2.6.0") == release("2.6")
    assert release("1.0.3") < release("1.0.23") < release("2")
    assert checked_requirements(["open_clip_torch<4,>=2.26.1", "tomli>=2; python_version < '3.11'"]) == [
        ("open_clip_torch", "<4,>=2.26.1")
    ]


def test_unmet_requirements_names_old_and_missing_packages(monkeypatch):
    real = metadata.version
    old = {"timm": "1.0.3", "torch": "2.6.0+cu124", "numpy": "2.5.5"}
    monkeypatch.setattr(dependencies.metadata, "version", lambda name: old.get(name) or real(name))
    found = unmet_requirements(
        [
            "torch>=2.6",  # met exactly, with a local tag
            "timm<2,>=1.0.23",  # as the installed metadata orders it
            "numpy>=1.25.2",
            "tomli>=2; python_version < '3'",  # a marker: not checked
            "scikit-image>=99; extra == 'demo'",
            "no-such-package-iqa>=1",
        ]
    )
    assert found == ["timm 1.0.3 (needs <2,>=1.0.23)", "no-such-package-iqa: not installed (needs >=1)"]


def test_this_environment_meets_the_installed_requirements():
    assert metadata.requires(dependencies.DISTRIBUTION)  # iqa is installed here (CI: pip install -e)
    assert unmet_requirements() == []


def test_an_unexpected_error_names_the_package_below_its_floor(monkeypatch):
    """A timm older than 1.0.12 failed `iqa models` with a TypeError that named neither timm nor a version."""

    def fails() -> list:
        raise TypeError("ResNet.__init__() got an unexpected keyword argument 'channels'")

    monkeypatch.setattr("iqa_cli.weights.importer.model_summaries", fails)
    monkeypatch.setattr("iqa_cli.cli.main.unmet_requirements", lambda: ["timm 1.0.3 (needs <2,>=1.0.23)"])
    result = CliRunner().invoke(app, ["models"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert "TypeError: ResNet.__init__() got an unexpected keyword argument 'channels'" in lines[0]
    assert "installed below iqa's requirements: timm 1.0.3 (needs <2,>=1.0.23)" in lines[0]


def test_an_unexpected_error_says_nothing_more_when_every_package_is_recent(monkeypatch):
    monkeypatch.setattr("iqa_cli.weights.importer.model_summaries", lambda: 1 / 0)
    monkeypatch.setattr("iqa_cli.cli.main.unmet_requirements", lambda: [])
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 1 and "installed below" not in result.output
    assert "ZeroDivisionError" in result.output


def test_unreadable_metadata_is_passed_over_not_raised(monkeypatch):
    """It runs inside the CLI's error handler: raising there would print a traceback."""

    def broken(name: str) -> list:
        raise ValueError("corrupt METADATA")

    monkeypatch.setattr(dependencies.metadata, "requires", broken)
    assert unmet_requirements() == []
    monkeypatch.setattr(dependencies.metadata, "version", lambda name: None)  # a distribution without a version
    assert unmet_requirements(["timm>=1.0.23"]) == []
