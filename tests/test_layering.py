"""Imports go one way: cells → engine → layers → everything else.

Every module under src/rnnlab is parsed with ``ast``; each import of an rnnlab module, at the top
of a file or inside a function, is mapped to the subpackage it reaches, and must not reach a
higher tier than the importer's own:

    tier 0  the small top-level helpers (_checks, init, _memory)
    tier 1  cells
    tier 2  engine
    tier 3  layers
    tier 4  analysis, export, stream, train, compare, cli, viz, models, tasks, bench, nn
    tier 5  the package itself (rnnlab/__init__.py, which gathers the public API)

Modules of one subpackage may import each other; so may the subpackages of tier 0 and of tier 4.
An import of an rnnlab module inside a function is refused too, wherever it points — deferring an
import hides a cycle instead of removing it — unless ``DEFERRED`` lists it with its reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "rnnlab"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

TIERS = {
    **dict.fromkeys(("_checks", "init", "_memory"), 0),
    "cells": 1,
    "engine": 2,
    "layers": 3,
    **dict.fromkeys(("analysis", "export", "stream", "train", "compare", "cli", "viz", "models", "tasks", "bench", "nn"), 4),
    "": 5,  # the package's own __init__
}
SHARED_TIERS = (0, 4)  # tiers whose subpackages may import one another

# (importing file relative to src/rnnlab, imported module): why it is imported inside a function
DEFERRED = {
    ("export/__init__.py", "rnnlab.export.onnx_export"):
        "onnx is an optional dependency: to_onnx's module imports it, so rnnlab.export loads it on first use",
    ("export/__init__.py", "rnnlab.export.onnx_dynamo"):
        "onnxscript is optional and slow to import: the translation registers when torch's ONNX exporter loads",
}


def _unit(module: str) -> str:
    """The subpackage (or top-level module) of a dotted rnnlab module name; "" for the package itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    return (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file()


def _targets(node: ast.AST, importer: str, is_package: bool) -> list[str]:
    """The rnnlab modules an import statement loads (``from X import name`` counts X.name when it is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == PACKAGE or a.name.startswith(PACKAGE + ".")]
    if node.level:
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    if source != PACKAGE and not source.startswith(PACKAGE + "."):
        return []
    found = [f"{source}.{a.name}" for a in node.names if _is_module(f"{source}.{a.name}")]
    return found if len(found) == len(node.names) else found + [source]


def _imports():
    """(file, line, importer, imported, inside a function) for every import of an rnnlab module."""
    for path in sorted(SRC.rglob("*.py")):
        importer, rel = _module_name(path), path.relative_to(SRC).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        deferred: set[int] = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                deferred.update(id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom)))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, importer, path.name == "__init__.py"):
                    yield rel, node.lineno, importer, target, id(node) in deferred


def test_every_subpackage_has_a_tier():
    units = {_unit(_module_name(p)) for p in SRC.rglob("*.py")}
    assert units <= set(TIERS), f"place these in TIERS (and in the order the docstring gives): {sorted(units - set(TIERS))}"


def test_imports_go_one_way():
    bad = []
    for rel, line, importer, target, _ in _imports():
        mine, theirs = _unit(importer), _unit(target)
        if theirs == mine:
            continue
        a, b = TIERS[mine], TIERS[theirs]
        if b < a or (a == b and a in SHARED_TIERS):
            continue
        bad.append(f"src/rnnlab/{rel}:{line}: {importer} (tier {a}) imports {target} (tier {b})")
    assert not bad, "imports against cells → engine → layers → the rest:\n" + "\n".join(bad)


def test_no_rnnlab_import_is_deferred_into_a_function():
    bad = [f"src/rnnlab/{rel}:{line}: {target} imported inside a function"
           for rel, line, _, target, inside in _imports() if inside and (rel, target) not in DEFERRED]
    assert not bad, ("move these imports to the top of the file (move code to the right layer if that makes a "
                     "cycle), or list them in DEFERRED with the reason:\n" + "\n".join(bad))


def test_the_checker_sees_relative_absolute_and_deferred_imports():
    tree = ast.parse("from ..layers.base import RecurrentLayer\nfrom .. import _checks\nimport rnnlab\n"
                     "def f():\n    from . import stack\n")
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    found = [t for n in nodes for t in _targets(n, "rnnlab.engine.scan", False)]
    assert found == ["rnnlab.layers.base", "rnnlab._checks", "rnnlab", "rnnlab.engine.stack"]
    assert [_unit(t) for t in found] == ["layers", "_checks", "", "engine"]
