"""Choosing a host Python for build.python_version."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cogport.build.errors import BuildError
from cogport.build.interpreters import Interpreter, discover, select, uv_find

AVAILABLE = [
    Interpreter((3, 12, 1), Path("/py/3.12.1/bin/python3.12")),
    Interpreter((3, 11, 9), Path("/py/3.11.9/bin/python3.11")),
    Interpreter((3, 11, 7), Path("/py/3.11.7/bin/python3.11")),
    Interpreter((3, 9, 18), Path("/py/3.9.18/bin/python3.9")),
]


def test_minor_picks_the_newest_patch() -> None:
    assert select("3.11", AVAILABLE) == (AVAILABLE[1], None)


def test_exact_patch() -> None:
    assert select("3.11.7", AVAILABLE) == (AVAILABLE[2], None)


def test_missing_patch_falls_back_with_a_warning() -> None:
    chosen, warning = select("3.11.2", AVAILABLE)
    assert chosen == AVAILABLE[1]
    assert warning is not None and "3.11.2 is not installed; using 3.11.9" in warning


@pytest.mark.parametrize(
    ("wanted", "message"),
    [
        ("3.13", "Python 3.13 (build.python_version) is not installed on this server. Available: 3.12.1, 3.11.9"),
        ("3.9", "too old"),
        ("three", "is not a version"),
    ],
)
def test_errors_name_what_is_available(wanted: str, message: str) -> None:
    with pytest.raises(BuildError, match=message.replace("(", r"\(").replace(")", r"\)")):
        select(wanted, AVAILABLE)


def test_discover_finds_this_interpreter_and_search_paths(tmp_path: Path) -> None:
    link = tmp_path / f"python{sys.version_info[0]}.{sys.version_info[1]}"
    link.symlink_to(sys.executable)
    found = discover([tmp_path])
    assert any(i.version == tuple(sys.version_info[:3]) for i in found)
    assert found == sorted(found, reverse=True)


def test_uv_fallback_keeps_the_minimum() -> None:
    import uv

    assert uv_find(uv.find_uv_bin(), "3.9") is None
    assert uv_find(uv.find_uv_bin(), "3.77") is None
    found = uv_find(uv.find_uv_bin(), f"{sys.version_info[0]}.{sys.version_info[1]}")
    assert found is None or found.version[:2] == tuple(sys.version_info[:2])
