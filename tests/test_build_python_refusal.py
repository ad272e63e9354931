"""Issue 18: a refused ``build.python_version`` lists only the interpreters a build could use."""

from __future__ import annotations

from pathlib import Path

import pytest

from cogport.build.errors import BuildError
from cogport.build.interpreters import Interpreter, select

HOST = [
    Interpreter((3, 12, 3), Path("/usr/bin/python3.12")),
    Interpreter((3, 11, 7), Path("/usr/bin/python3.11")),
    Interpreter((3, 8, 18), Path("/opt/python3.8/bin/python3.8")),
]


def test_a_too_old_version_lists_only_usable_interpreters() -> None:
    with pytest.raises(BuildError) as refused:
        select("3.8", HOST)
    assert "too old" in refused.value.message
    assert refused.value.message.endswith("Available on this server: 3.12.3, 3.11.7")
    assert "3.8.18" not in refused.value.message


def test_a_missing_version_lists_only_usable_interpreters() -> None:
    with pytest.raises(BuildError) as refused:
        select("3.13", HOST)
    assert "Available: 3.12.3, 3.11.7." in refused.value.message and "3.8.18" not in refused.value.message
    with pytest.raises(BuildError) as none:
        select("3.13", HOST[2:])
    assert "Available: none." in none.value.message
