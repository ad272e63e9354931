"""Host Pythons: find one for ``build.python_version``.

``uv python install`` needs downloads that many hosts cannot make, so cogport uses interpreters that are
already there: the operator's ``build.python_search_paths`` first, then pyenv's versions, uv's managed
Pythons and the directories on ``PATH`` (pyenv *shims* are skipped: they are not interpreters).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cogport.build.errors import BuildError

MINIMUM = (3, 10)
"""cog 0.17 and newer (coglet) need Python 3.10."""
_VERSION = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?$")
_EXECUTABLE = re.compile(r"^python(\d+)\.(\d+)$")
_QUERY = "import sys; print('%d.%d.%d' % sys.version_info[:3])"
_probed: dict[tuple[str, float], tuple[int, int, int] | None] = {}


@dataclass(frozen=True, order=True)
class Interpreter:
    version: tuple[int, int, int]
    path: Path

    @property
    def text(self) -> str:
        return ".".join(str(part) for part in self.version)


def default_dirs() -> list[Path]:
    """Where interpreters usually live on a host, after the operator's own search paths."""
    home = Path.home()
    dirs = sorted((home / ".pyenv" / "versions").glob("*/bin"))
    dirs += sorted((home / ".local" / "share" / "uv" / "python").glob("*/bin"))
    dirs += [Path(p) for p in os.get_exec_path() if "shims" not in Path(p).parts]
    dirs += [Path("/usr/local/bin"), Path("/usr/bin")]
    return dirs


def discover(search_paths: Sequence[Path]) -> list[Interpreter]:
    """Every distinct interpreter found, newest first."""
    found: dict[Path, Interpreter] = {}
    for directory in _unique([*search_paths, *default_dirs()]):
        if not directory.is_dir():
            continue
        for candidate in sorted(directory.glob("python3.*")):
            if not _EXECUTABLE.match(candidate.name) or not os.access(candidate, os.X_OK):
                continue
            real = candidate.resolve()
            if real in found:
                continue
            version = _version_of(candidate)
            if version is not None:
                found[real] = Interpreter(version, candidate)
    return sorted(found.values(), reverse=True)


def _unique(paths: Iterable[Path]) -> list[Path]:
    seen: set[Path] = set()
    result = []
    for path in paths:
        if path not in seen:
            seen.add(path)
            result.append(path)
    return result


def _version_of(executable: Path) -> tuple[int, int, int] | None:
    # pyenv and uv name their directories after the full version; trust that, it saves a process.
    for part in reversed(executable.parts[:-1]):
        match = re.match(r"^(?:cpython-)?(\d+)\.(\d+)\.(\d+)(?:$|[-+])", part)
        if match:
            major, minor, patch = (int(g) for g in match.groups())
            if executable.name == f"python{major}.{minor}":
                return (major, minor, patch)
    try:
        key = (str(executable), executable.stat().st_mtime)
    except OSError:
        return None
    if key not in _probed:
        try:
            out = subprocess.run(
                [str(executable), "-c", _QUERY], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            match = _VERSION.match(out)
            _probed[key] = (int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)) if match else None
        except (OSError, subprocess.SubprocessError):
            _probed[key] = None
    return _probed[key]


def uv_find(uv: str, wanted: str) -> Interpreter | None:
    """uv's own discovery, as a last resort for a version the scan above did not find (it is slower)."""
    match = _VERSION.match(wanted.strip())
    if not match or (int(match.group(1)), int(match.group(2))) < MINIMUM:
        return None
    try:
        proc = subprocess.run(
            [uv, "python", "find", "--no-project", wanted.strip()],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    path = Path(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip() else None
    version = _version_of(path) if path is not None else None
    if path is None or version is None or version[:2] != (int(match.group(1)), int(match.group(2))):
        return None
    return Interpreter(version, path)


def find(wanted: str, search_paths: Sequence[Path], uv: str) -> tuple[Interpreter, str | None]:
    """The interpreter for ``wanted`` among the host's (:func:`select`), else uv's discovery (blocking)."""
    try:
        return select(wanted, discover(search_paths))
    except BuildError:
        found = uv_find(uv, wanted)
        if found is None:
            raise
        return found, None


def select(wanted: str, available: Sequence[Interpreter]) -> tuple[Interpreter, str | None]:
    """The interpreter for ``wanted`` (``3.11`` or ``3.11.7``), plus a warning when only the minor matched."""
    match = _VERSION.match(wanted.strip())
    if not match:
        raise BuildError(f"build.python_version {wanted!r} is not a version such as '3.11' or '3.11.7'")
    major, minor = int(match.group(1)), int(match.group(2))
    patch = int(match.group(3)) if match.group(3) is not None else None
    # Only interpreters a build can use: a 3.8 on the host is no way out of "3.8 is too old".
    usable = [i for i in available if i.version[:2] >= MINIMUM]
    listing = ", ".join(i.text for i in usable) or "none"
    if (major, minor) < MINIMUM:
        raise BuildError(
            f"build.python_version {wanted} is too old: cog 0.17 and newer (coglet) need Python "
            f"{MINIMUM[0]}.{MINIMUM[1]} or newer. Available on this server: {listing}"
        )
    same_minor = [i for i in available if i.version[:2] == (major, minor)]
    if not same_minor:
        raise BuildError(
            f"Python {wanted} (build.python_version) is not installed on this server. Available: {listing}. "
            "Change build.python_version, or ask the operator to install it and add its directory to "
            "COGPORT_BUILD__PYTHON_SEARCH_PATHS."
        )
    if patch is None:
        return same_minor[0], None
    for interpreter in same_minor:
        if interpreter.version[2] == patch:
            return interpreter, None
    chosen = same_minor[0]
    return chosen, f"Python {wanted} is not installed; using {chosen.text} ({chosen.path})"
