"""Installed packages that fall short of iqa's declared requirements.

A too-old timm, Typer or numpy fails with errors that name neither the package nor its version
(`ResNet.__init__() got an unexpected keyword argument 'channels'`), for example where a conda
environment was installed with `--no-deps`. The CLI adds what `unmet_requirements` finds to an
unexpected error's line. It reads package metadata only: nothing is imported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from importlib import metadata

DISTRIBUTION = "iqa-cli"
_REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\s*(?:\[[^\]]*\])?\s*([^;]*?)\s*(?:;(.*))?$")
_CLAUSE = re.compile(r"^(>=|<=|==|!=|<|>|~=)\s*([0-9][0-9A-Za-z.*+!-]*)$")


def checked_requirements(requirements: Iterable[str]) -> list[tuple[str, str]]:
    """(name, specifier) of each requirement that is checked: those with an environment marker
    (extras, Python-version backports) are not."""
    checked = []
    for text in requirements:
        match = _REQUIREMENT.match(text)
        if match is not None and not match[3]:
            checked.append((match[1], match[2].strip()))
    return checked


def release(version: str) -> tuple[int, ...]:
    """The numeric release of a version string, trailing zeros dropped (so 2.6 equals 2.6.0):
    '2.11.0+cu130' -> (2, 11), '1.0.23' -> (1, 0, 23), '2.6.0rc1' -> (2, 6)."""
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = re.match(r"\d+", piece)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.group() != piece:
            break  # a pre-release or post-release tail ends the release
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def _meets(installed: tuple[int, ...], operator: str, bound: tuple[int, ...]) -> bool:
    if operator == ">=":
        return installed >= bound
    if operator == "<":
        return installed < bound
    if operator == ">":
        return installed > bound
    if operator == "<=":
        return installed <= bound
    if operator == "==":
        return installed == bound
    if operator == "!=":
        return installed != bound
    return True  # ~= and wildcards: not used by iqa's requirements


def unmet_requirements(requirements: Iterable[str] | None = None) -> list[str]:
    """'name version (needs SPEC)' or 'name: not installed (needs SPEC)' for each requirement this
    Python does not meet. Default: iqa's own installed requirements (none when iqa runs from a source
    folder without being installed). Requirements with an environment marker (extras, Python-version
    backports) are not checked."""
    if requirements is None:
        try:
            requirements = metadata.requires(DISTRIBUTION) or []
        except Exception:  # noqa: BLE001 - not installed, or unreadable metadata: nothing to say
            return []
    unmet = []
    for name, spec in checked_requirements(requirements):
        clauses = [_CLAUSE.match(clause.strip()) for clause in spec.split(",") if clause.strip()]
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            unmet.append(f"{name}: not installed (needs {spec or 'any version'})")
            continue
        except Exception:  # noqa: BLE001 - unreadable metadata: this one cannot be judged
            continue
        if not isinstance(version, str) or not version:
            continue  # a distribution without a version: this one cannot be judged
        installed = release(version)
        if not all(_meets(installed, c[1], release(c[2])) for c in clauses if c is not None):
            unmet.append(f"{name} {version} (needs {spec})")
    return unmet
