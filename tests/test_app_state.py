"""Routes and pages take what they need as typed dependencies (``cogport.api.deps``): only the app factory,
which fills ``app.state``, and ``api/deps.py``, which reads it, name it."""

from __future__ import annotations

import ast
from pathlib import Path

import cogport

SRC = Path(cogport.__file__).parent
ALLOWED = {SRC / "app.py", SRC / "api" / "deps.py"}


def state_reads(path: Path) -> list[int]:
    """Lines of ``path`` with an ``<anything>.app.state`` or ``app.state`` attribute (docstrings do not count)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr == "state":
            owner = node.value
            if (isinstance(owner, ast.Attribute) and owner.attr == "app") or (
                isinstance(owner, ast.Name) and owner.id == "app"
            ):
                lines.append(node.lineno)
    return lines


def test_only_the_factory_and_deps_touch_app_state() -> None:
    found = [
        f"{path.relative_to(SRC.parent)}:{line}"
        for path in sorted(SRC.rglob("*.py"))
        if path not in ALLOWED
        for line in state_reads(path)
    ]
    assert not found, "take a typed dependency from cogport.api.deps instead:\n" + "\n".join(found)


def test_the_check_sees_a_read() -> None:
    assert state_reads(SRC / "api" / "deps.py")
