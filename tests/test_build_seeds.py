"""What a venv gets besides cog and the model's packages: setuptools (with ``pkg_resources``) up to Python
3.11, as Docker's python images carry it, unless the model names setuptools itself."""

from __future__ import annotations

from pathlib import Path

from cogport.build.environment import SETUPTOOLS, EnvironmentSpec
from cogport.build.interpreters import Interpreter


def spec(version: tuple[int, int, int], **fields: object) -> EnvironmentSpec:
    return EnvironmentSpec(interpreter=Interpreter(version, Path("/usr/bin/python3")), sdk_version="0.23.1", **fields)  # type: ignore[arg-type]


def test_setuptools_up_to_python_3_11(tmp_path: Path) -> None:
    assert spec((3, 10, 14)).seeds(tmp_path) == (SETUPTOOLS,)
    assert spec((3, 11, 7)).seeds(tmp_path) == (SETUPTOOLS,)
    assert spec((3, 12, 3)).seeds(tmp_path) == ()
    assert spec((3, 13, 0)).seeds(tmp_path) == ()


def test_the_models_own_setuptools_wins(tmp_path: Path) -> None:
    assert spec((3, 11, 7), packages=("setuptools==83.0.0",)).seeds(tmp_path) == ()
    assert spec((3, 11, 7), packages=("setuptools-scm",)).seeds(tmp_path) == (SETUPTOOLS,)
    (tmp_path / "requirements.txt").write_text("numpy\n-r more.txt\n")
    (tmp_path / "more.txt").write_text("# pinned\nSetuptools >= 70 ; python_version < '3.12'\n")
    assert spec((3, 11, 7), requirements="requirements.txt").seeds(tmp_path) == ()
    (tmp_path / "more.txt").write_text("setuptools_rust\n")
    assert spec((3, 11, 7), requirements="requirements.txt").seeds(tmp_path) == (SETUPTOOLS,)


def test_a_lock_is_installed_as_it_is(tmp_path: Path) -> None:
    """A node installs the frozen lock alone: setuptools is in it when the venv it was frozen from had it."""
    assert spec((3, 11, 7), lock="cog==0.23.1\nsetuptools==81.0.0\n").seeds(tmp_path) == ()
