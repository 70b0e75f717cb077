"""The orchestration package's three parts and who may import whom (docs/contracts.md, layout):

- `core/` (matrix, tree, plan, shards, listing, results, summary) imports neither `host/` nor `module/`;
- `host/` (the `bnb-ci` executor) and `module/` (the Dagger module) import `core/`, never each other;
- only `module/` imports dagger; the package has no module outside the three folders;
- no import circle, counting imports made only for type checking or inside functions.

Every import of every file is read with `ast` (relative ones resolved), so a lazy import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from bnb_build_helpers import PIPELINE_SRC

PACKAGE = "bitsandbytes_ci"
PARTS = ("core", "host", "module")
FORBIDDEN = {"core": ("host", "module"), "host": ("module",), "module": ("host",)}


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path, path: Path) -> set[str]:
    """Every module `path` imports, as absolute names (for `from X import y`: X, and X.y when that is a module)."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's own modules it imports."""
    files = {module_name(root, p): p for p in (root / PACKAGE).rglob("*.py")}
    return {name: {i for i in imports_of(root, path) if i in files} for name, path in files.items()}


def part_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in PARTS else None


def violations(root: Path) -> list[str]:
    """What breaks the layering rules in the package below `root`, one line each."""
    found = []
    files = {module_name(root, p): p for p in (root / PACKAGE).rglob("*.py")}
    for name, path in sorted(files.items()):
        part = part_of(name)
        if part is None and name != PACKAGE:
            found.append(f"{name}: outside {', '.join(PARTS)}")
        for imported in sorted(imports_of(root, path)):
            if imported.split(".")[0] == "dagger" and part != "module" and name != PACKAGE:
                found.append(f"{name} imports {imported}: only module/ may import dagger")
            other = part_of(imported) if imported.startswith(PACKAGE + ".") else None
            if part and other in FORBIDDEN[part]:
                found.append(f"{name} imports {imported}: {part}/ may not import {other}/")
    found.extend(f"import circle: {' -> '.join(c)}" for c in circles(graph(root)))
    return found


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected part of more than one module (or a module importing itself)."""
    found, seen, stack, on_stack, low, index = [], set(), [], set(), {}, {}

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        seen.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in seen:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                part.append(top)
                if top == node:
                    break
            if len(part) > 1 or node in edges.get(node, ()):
                found.append(sorted(part))

    for node in sorted(edges):
        if node not in seen:
            visit(node)
    return found


def test_the_package_keeps_its_layers() -> None:
    assert violations(PIPELINE_SRC) == []
    assert {p.name for p in (PIPELINE_SRC / PACKAGE).iterdir() if p.suffix == ".py"} == {"__init__.py"}
    for part in PARTS:
        assert (PIPELINE_SRC / PACKAGE / part / "__init__.py").is_file(), part


def test_the_cli_and_the_verbs_share_the_invocation_type_without_a_circle() -> None:
    edges = graph(PIPELINE_SRC)
    assert "bitsandbytes_ci.host.invocation" in edges["bitsandbytes_ci.host.cli"]
    for verbs in ("verbs", "release_verbs", "doctor", "install_toolkit"):
        assert "bitsandbytes_ci.host.cli" not in edges[f"bitsandbytes_ci.host.{verbs}"], verbs


@pytest.mark.parametrize(
    ("path", "text", "expected"),
    [
        ("core/plan.py", "from ..host import local\n", "core/ may not import host/"),
        ("core/plan.py", "def f():\n    from ..module.main import X\n", "core/ may not import module/"),
        ("host/verbs.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..module import main\n", "host/ may not import module/"),
        ("module/main.py", "from ..host.cli import main\n", "module/ may not import host/"),
        ("host/verbs.py", "import dagger\n", "only module/ may import dagger"),
        ("stray.py", "x = 1\n", "outside core, host, module"),
        ("host/verbs.py", "from .cli import X\n", "import circle: bitsandbytes_ci.host.cli -> bitsandbytes_ci.host.verbs"),
    ],
)
def test_a_broken_rule_is_reported(tmp_path: Path, path: str, text: str, expected: str) -> None:
    """The checker on a small package of the same shape, with one rule broken each time."""
    package = tmp_path / PACKAGE
    for part in PARTS:
        (package / part).mkdir(parents=True)
        (package / part / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "core/plan.py").write_text("from . import matrix\n")
    (package / "core/matrix.py").write_text("")
    (package / "host/cli.py").write_text("from .verbs import run\nfrom ..core import plan\n")
    (package / "host/verbs.py").write_text("")
    (package / "module/main.py").write_text("import dagger\nfrom ..core.plan import plan_jobs\n")
    assert violations(tmp_path) == []
    (package / path).write_text(text)
    assert any(expected in line for line in violations(tmp_path)), violations(tmp_path)
