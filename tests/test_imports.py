"""The package's shape: no module imports another package's private names (what is shared is public),
and importing the package and its CLI loads no network and no open_clip."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "iqa_cli"
PRIVATE_IMPORT = re.compile(r"^\s*from\s+(iqa_cli(?:\.\w+)*)\s+import\s+\(?([^#\n]*)", re.MULTILINE)


def _package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])  # iqa_cli.data.cache_read -> iqa_cli.data


def test_no_private_names_cross_a_package_boundary():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for source, names in PRIVATE_IMPORT.findall(path.read_text()):
            private = [
                n.strip() for n in names.split(",") if n.strip().startswith("_") and not n.strip().startswith("__")
            ]
            if private and _package_of(source) != _package_of(module):
                offenders.append(f"{module}: from {source} import {', '.join(private)}")
    assert offenders == [], offenders


def test_importing_the_cli_builds_no_network():
    code = (
        "import sys, iqa_cli, iqa_cli.cli.main; "
        "assert 'open_clip' not in sys.modules; "
        "assert not any(m.startswith('iqa_cli.models.') and m not in ('iqa_cli.models.registry', "
        "'iqa_cli.models.checkpoint') for m in sys.modules), sorted(m for m in sys.modules if 'iqa_cli.models' in m)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
