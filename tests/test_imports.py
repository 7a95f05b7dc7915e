"""The package's shape: no import cycle between its modules (function-local imports included), no module
imports another package's private names (what is shared is public), and importing the package and its
CLI loads no network and no open_clip."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "iqa_cli"
PRIVATE_IMPORT = re.compile(r"^\s*from\s+(iqa_cli(?:\.\w+)*)\s+import\s+\(?([^#\n]*)", re.MULTILINE)


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """Nodes under `if TYPE_CHECKING:`: annotations only, never run."""
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(child) for child in ast.walk(node))
    return hidden


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its body (module level or inside functions)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        hidden = _type_checking_nodes(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    parts = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.add(submodule if submodule in modules else base)
        graph[module] = {t for t in targets if t in modules and t != module}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_import_cycles_lazy_imports_included():
    graph = import_graph()
    assert "iqa_cli.train.recipes.base" in graph and "iqa_cli.train.engine" in graph["iqa_cli.train.trainer"]
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _package_of(module: str) -> str:
    return ".".join(module.split(".")[:2])  # iqa_cli.data.cache_read -> iqa_cli.data


def test_no_private_names_cross_a_package_boundary():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        for source, names in PRIVATE_IMPORT.findall(path.read_text(encoding="utf-8")):
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
