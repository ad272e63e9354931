"""The layers of cogport: no import runs back up a layer, and no two packages import each other.

Every module under ``src/cogport`` is parsed with :mod:`ast`; each ``import cogport.x…`` or
``from cogport.x… import`` (at module level, inside functions, and under ``TYPE_CHECKING``: a type-only
import is still a dependency a reader must hold, and mypy follows it) is mapped to the package it comes from
and the one it goes to (``cogport/x/…`` or the module ``cogport/x.py``). An import within one layer is
allowed; the graph of packages as a whole must still have no cycle.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from itertools import pairwise
from pathlib import Path

import cogport

SRC = Path(cogport.__file__).parent

LAYERS: list[set[str]] = [
    {"errors", "identifiers", "core", "storable", "schemas"},
    {"settings", "db", "logs"},
    {"storage", "files", "netpolicy", "netfetch", "hardware", "background"},
    {"build", "runtime"},
    {"backends"},
    {"ops"},
    {"lifecycle", "webhooks", "services", "bootstrap"},
    {"metrics"},
    {"resources"},
    {"api", "web"},
    {"app"},
    {"cli"},
]
"""Bottom to top. ``core`` is the run's vocabulary (spec, job, events, outcome, status, kind);
``background`` is the loop every service is; ``metrics`` reads the lifecycle and the backends for the API;
``resources`` builds them all, in order, for the app."""

LAYER_OF = {package: index for index, layer in enumerate(LAYERS) for package in layer}

CORE_MAY_IMPORT = {"core", "errors", "identifiers"}


def package_of(path: Path) -> str:
    parts = path.relative_to(SRC).parts
    return parts[0].removesuffix(".py") if parts[0] != "__init__.py" else "__init__"


def imports(path: Path) -> list[tuple[str, int]]:
    """``(imported package, line)`` for every import of ``cogport.<package>`` in ``path``."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "cogport":
                found += [(alias.name, node.lineno) for alias in node.names]
            elif node.module.startswith("cogport."):
                found.append((node.module.split(".")[1], node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name.split(".")[1], node.lineno) for a in node.names if a.name.startswith("cogport.")]
    return found


def edges() -> dict[tuple[str, str], list[str]]:
    """``(from package, to package)`` → where (``file:line``), packages apart."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        source = package_of(path)
        for target, line in imports(path):
            if target != source:
                found[(source, target)].append(f"{path.relative_to(SRC.parent)}:{line}")
    return found


def test_every_package_has_a_layer() -> None:
    packages = {package_of(path) for path in SRC.rglob("*.py")} - {"__init__", "__main__"}
    assert packages <= LAYER_OF.keys(), f"give these a layer in LAYERS: {sorted(packages - LAYER_OF.keys())}"


def test_no_import_runs_up_a_layer() -> None:
    upward = [
        f"{where}: {source} (layer {LAYER_OF[source]}) imports {target} (layer {LAYER_OF[target]})"
        for (source, target), places in sorted(edges().items())
        if source in LAYER_OF and target in LAYER_OF and LAYER_OF[target] > LAYER_OF[source]
        for where in places
    ]
    assert not upward, "imports that run back up a layer:\n" + "\n".join(upward)


def test_core_imports_only_the_bottom() -> None:
    wrong = [
        f"{where}: core imports {target}"
        for (source, target), places in sorted(edges().items())
        if source == "core" and target not in CORE_MAY_IMPORT
        for where in places
    ]
    assert not wrong, "\n".join(wrong)


def test_no_cycle_between_packages() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for source, target in edges():
        graph[source].add(target)
    cycles: list[str] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for following in sorted(graph[node]):
            if state.get(following) == 1:
                cycle = [*path[path.index(following) :], following]
                places = [f"  {a} -> {b}: {', '.join(edges()[(a, b)])}" for a, b in pairwise(cycle)]
                cycles.append(" -> ".join(cycle) + "\n" + "\n".join(places))
            elif following not in state:
                visit(following)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "cycles between packages:\n" + "\n".join(cycles)
