"""The import contract of the house: the engine never imports a GUI toolkit (nor the app), no
workspace imports another, and no two modules import each other (directly or round a circle),
not even inside a function or for type checking only."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GUI = ("PyQt6", "PyQt5", "PySide6", "pyqtgraph", "vispy", "app")
WORKSPACES = ("ephys", "calcium", "morphology", "factors")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """Every module ``path`` names in an import statement, wherever the statement is."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # "from pkg import module"
    return found


def graph() -> dict[str, set[str]]:
    known = {**modules("engine"), **modules("app")}
    return {name: {m for m in imports(path) if m in known and m != name} for name, path in known.items()}


def test_engine_never_imports_a_gui_toolkit_or_the_app_statically():
    offending = {name: sorted(m for m in imports(path) if m.split(".")[0] in GUI)
                 for name, path in modules("engine").items()}
    assert not {k: v for k, v in offending.items() if v}


def test_importing_every_engine_module_loads_no_gui_toolkit():
    names = sorted(modules("engine"))
    code = ("import importlib, json, sys\n"
            f"for name in {names!r}:\n    importlib.import_module(name)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {GUI!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_no_workspace_imports_another():
    crossings = []
    for name, path in modules("app").items():
        parts = name.split(".")
        if len(parts) > 2 and parts[1] in WORKSPACES:
            for m in imports(path):
                other = m.split(".")
                if len(other) > 1 and other[0] == "app" and other[1] in WORKSPACES and other[1] != parts[1]:
                    crossings.append(f"{name} imports {m}")
    assert not crossings


def test_no_import_circles():
    edges = graph()
    circles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                circles.append(" → ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not circles, circles


def test_the_checks_see_a_circle_and_a_gui_import(tmp_path, monkeypatch):
    """The static checks would catch what they forbid (a check that sees nothing proves nothing)."""
    fake = tmp_path / "engine"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "a.py").write_text("def f():\n    from engine.b import g\n")
    (fake / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from engine import a\n"
                               "def g():\n    import pyqtgraph\n")
    (tmp_path / "app").mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    edges = graph()
    assert edges["engine.a"] == {"engine.b"} and edges["engine.b"] == {"engine", "engine.a"}
    assert "pyqtgraph" in imports(fake / "b.py")
