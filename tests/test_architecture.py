"""The package's structure, checked from the source with ``ast`` (nothing is imported).

Every ``import`` statement of every module under ``src/flowseg`` counts: at module level,
inside functions and methods, and under ``if TYPE_CHECKING:`` (the package has no such
block; were one added, its imports would count too, so a cycle cannot hide there).

Rules
-----
* no import cycles among flowseg modules;
* the engine (``flowseg.engine``) never imports napari, Qt, magicgui or superqt;
* lower engine layers never import higher ones: ``flows``, ``network``, ``io`` and ``data``
  import neither ``inference`` nor ``training``; ``inference`` imports no ``training``;
* imports of flowseg modules inside functions are *lazy heavy imports* only: the plugin
  (napari widgets, CLI) imports engine modules (torch, numba, dask) when it needs them, so
  ``import flowseg`` and napari's start-up stay light; inside the engine only the few listed
  in ``_ENGINE_LAZY`` (with their reason) are allowed;
* no module has more than 400 lines.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "flowseg"
MAX_LINES = 400
GUI = ("napari", "qtpy", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6",
       "vispy")
#: (importing module, imported module) pairs allowed inside functions within the engine
_ENGINE_LAZY = {
    # memory is imported by the napari widget and the CLI before any model loads; these
    # shape rules import torch
    ("flowseg.engine.memory", "flowseg.engine.network.tiling"),
    ("flowseg.engine.memory", "flowseg.engine.inference.prepare"),
    ("flowseg.engine.memory", "flowseg.engine.inference.transforms"),
}
_LAYERS = {  # package -> engine packages it must not import
    "flows": ("inference", "training", "blocks", "tracking"),
    "network": ("inference", "training", "blocks", "tracking"),
    "io": ("inference", "training", "blocks", "tracking"),
    "data": ("inference", "training", "blocks", "tracking"),
    "inference": ("training", "blocks", "tracking"),
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (or external top-level name)
    lineno: int
    in_function: bool


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    package = name.split(".") if is_pkg else name.split(".")[:-1]
    func_nodes: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            func_nodes.update(id(n) for n in ast.walk(fn) if n is not fn)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod
                       for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        for t in dict.fromkeys(targets):
            out.append(Import(name, t, node.lineno, id(node) in func_nodes))
    return out


@pytest.fixture(scope="module")
def graph() -> tuple[dict[str, Path], list[Import]]:
    modules = _modules()
    imports = [i for n, p in modules.items() for i in _imports(n, p, modules)]
    return modules, imports


def _internal(imports: list[Import], modules: dict[str, Path]) -> list[Import]:
    """Imports of flowseg modules (``from pkg import name`` counts as importing ``pkg``)."""
    out = []
    for i in imports:
        t = i.target
        while t and t not in modules:
            t = t.rpartition(".")[0]
        if t and t.startswith("flowseg") and t != i.source:
            out.append(Import(i.source, t, i.lineno, i.in_function))
    return out


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    """The checker itself can fail: a two-module and a three-module cycle are found."""
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_import_parser_sees_function_level_imports(tmp_path):
    """Relative and function-level imports are resolved to the modules they name."""
    mod = tmp_path / "m.py"
    mod.write_text("from ..progress import report\n\n\ndef f():\n    from . import x\n")
    modules = {"flowseg.engine.progress": mod, "flowseg.engine.flows.x": mod}
    found = _imports("flowseg.engine.flows.m", mod, modules)
    assert found == [Import("flowseg.engine.flows.m", "flowseg.engine.progress", 1, False),
                     Import("flowseg.engine.flows.m", "flowseg.engine.flows.x", 5, True)]


def test_no_import_cycles(graph):
    modules, imports = graph
    edges: dict[str, set[str]] = {m: set() for m in modules}
    for i in _internal(imports, modules):
        if not i.target.startswith(i.source + "."):  # a package importing its own children
            edges[i.source].add(i.target)
    assert find_cycles(edges) == []


def test_engine_never_imports_gui(graph):
    modules, imports = graph
    bad = [f"{i.source}:{i.lineno} imports {i.target}" for i in imports
           if i.source.startswith("flowseg.engine") and i.target.split(".")[0] in GUI]
    assert not bad, bad


def test_engine_layers(graph):
    modules, imports = graph
    bad = []
    for i in _internal(imports, modules):
        src, dst = i.source.split("."), i.target.split(".")
        if src[:2] != ["flowseg", "engine"] or dst[:2] != ["flowseg", "engine"]:
            continue
        if len(src) > 2 and len(dst) > 2 and dst[2] in _LAYERS.get(src[2], ()):
            bad.append(f"{i.source}:{i.lineno} imports {i.target}")
    assert not bad, bad


def test_function_level_imports_are_lazy_heavy_imports(graph):
    modules, imports = graph
    bad = []
    for i in _internal(imports, modules):
        if not i.in_function:
            continue
        engine_src = i.source.startswith("flowseg.engine")
        engine_dst = i.target.startswith("flowseg.engine")
        allowed = (i.source, i.target) in _ENGINE_LAZY if engine_src else engine_dst
        if not allowed:
            bad.append(f"{i.source}:{i.lineno} imports {i.target} inside a function")
    assert not bad, bad
    used = {(i.source, i.target) for i in _internal(imports, modules) if i.in_function}
    assert used >= _ENGINE_LAZY, _ENGINE_LAZY - used  # no stale exceptions


def test_modules_are_small(graph):
    modules, _ = graph
    long = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in modules.items()}
    assert {n: k for n, k in long.items() if k > MAX_LINES} == {}
