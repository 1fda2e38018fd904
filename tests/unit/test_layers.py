"""The dependency direction of design.md, checked over every import with ast."""

from __future__ import annotations

import ast
from pathlib import Path

import reachtest

PACKAGE = Path(reachtest.__file__).parent
#: room -> the rooms it may import (besides itself). cli and schedule wire everything.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "model": {"errors"},
    "packet": {"errors", "model"},
    "engine": {"errors", "model", "packet"},
    "analysis": {"errors", "model"},
    "report": {"errors", "model", "analysis", "inputs"},
    "history": {"errors", "model", "files"},
    "lab": {"errors", "model", "packet", "asn", "names"},  # asn: the lab's DNS serves -z's zones
    "spec": {"errors", "model", "inputs", "packet"},
    "names": {"errors", "model"},
    "asn": {"errors", "model", "names"},
    "interrupts": {"errors"},
    "privileges": {"errors"},
    "inputs": {"errors"},
    "files": {"errors"},
    "doctor": set(),
    "__init__": set(),
    "__main__": {"cli"},
}
EVERYTHING = {"cli", "schedule", "serve", "session"}  # the composition root and its helpers
#: Never imported at module level anywhere in the package (start-up time).
HEAVY = {
    "scapy", "pandas", "numpy", "matplotlib", "scipy", "icmplib", "rich", "jinja2", "dns",
    "jsonschema", "prometheus_client",
}  # fmt: skip
#: Renderer modules built on a heavy library; they are only ever imported lazily (checked).
RENDERERS = {
    "report/terminal.py": "rich",
    "report/html.py": "jinja2",
    "report/charts.py": "matplotlib",
}


def room(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


def imports(tree: ast.AST) -> list[tuple[str, bool]]:
    """(module, at module level?) for every import in a module."""
    top = {id(n) for n in getattr(tree, "body", [])}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, id(node) in top))
    return found


def test_rooms_import_only_what_design_allows() -> None:
    wrong = []
    for path in PACKAGE.rglob("*.py"):
        here = room(path)
        for module, _ in imports(ast.parse(path.read_text())):
            parts = module.split(".")
            if parts[0] != "reachtest" or len(parts) < 2 or here in EVERYTHING:
                continue
            target = parts[1]
            if target != here and target not in ALLOWED.get(here, set()):
                wrong.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_heavy_libraries_are_imported_lazily() -> None:
    eager = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        guarded = set()
        for node in tree.body:  # `if TYPE_CHECKING:` blocks do not run
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                guarded |= {id(n) for n in ast.walk(node)}
        for node in tree.body:
            if id(node) in guarded:
                continue
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            rel = str(path.relative_to(PACKAGE))
            eager += [
                f"{rel}: {n}"
                for n in names
                if n.split(".")[0] in HEAVY and RENDERERS.get(rel) != n.split(".")[0]
            ]
    assert not eager, "\n".join(eager)


def test_renderer_modules_are_imported_lazily_everywhere() -> None:
    """A renderer built on a heavy library is imported inside functions only."""
    modules = {"reachtest." + r.removesuffix(".py").replace("/", ".") for r in RENDERERS}
    eager = []
    for path in PACKAGE.rglob("*.py"):
        for module, top in imports(ast.parse(path.read_text())):
            if top and module in modules and str(path.relative_to(PACKAGE)) not in RENDERERS:
                eager.append(f"{path.relative_to(PACKAGE)} imports {module} at module level")
    assert not eager, "\n".join(eager)
