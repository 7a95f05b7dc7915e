"""The dependency floors in pyproject.toml are the versions pinned in tests/constraints-minimum.txt.

A floor is a promise that `iqa` works with that version; the constraints file is how the suite is run
on it. Both name the same versions, so raising one without the other fails here.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from iqa_cli.dependencies import release

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINTS = ROOT / "tests" / "constraints-minimum.txt"
FLOOR = re.compile(r"^([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)")
# Tools of the dev extra, whose floors promise nothing about iqa itself.
TOOLS = {"pytest", "pytest-timeout", "ruff", "mypy"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_floors() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        requirements += extra
    floors: dict[str, str] = {}
    for requirement in requirements:
        match = FLOOR.match(requirement.split(";")[0].strip())
        if match and _normal(match[1]) not in TOOLS:
            floors[_normal(match[1])] = match[2]
    return floors


def pinned() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[_normal(name)] = version.strip()
    return pins


def test_every_floor_is_pinned_in_the_minimum_constraints():
    floors, pins = declared_floors(), pinned()
    assert "torch" in floors and "timm" in floors  # the parse found the dependencies
    for name, floor in floors.items():
        assert name in pins, f"{name}>={floor} in pyproject.toml is not pinned in {CONSTRAINTS.name}"
        assert release(pins[name]) == release(floor), (
            f"{name}: floor {floor}, but {CONSTRAINTS.name} tests {pins[name]}"
        )


def test_every_pin_is_a_declared_dependency():
    floors = declared_floors()
    for name in pinned():
        assert name in floors, f"{CONSTRAINTS.name} pins {name}, which pyproject.toml does not declare"
