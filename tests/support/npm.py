"""JavaScript clients for tests: pinned npm packages installed by the test set-up, and node scripts run with them.

``installed("replicate@1.4.0")`` runs ``npm install`` once per machine into a directory under the temp dir
named after the package list (a file lock keeps two pytest workers, or the SQLite and PostgreSQL passes,
from installing at once); later calls find it installed. Nothing is skipped: without node/npm, or when the
registry cannot be reached, the test fails saying so.

``run_script`` copies a script from ``tests/clients_js/`` into that directory (so ``require`` and ``import``
resolve its packages) and runs it with node; the script prints one JSON line last, which is returned.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "clients_js"
INSTALLED = ".cogport-installed"


def cache_dir(packages: tuple[str, ...]) -> Path:
    slug = re.sub(r"[^a-z0-9.]+", "-", "-".join(packages).lower()).strip("-")[:80]
    digest = hashlib.sha256("\n".join(packages).encode()).hexdigest()[:8]
    return Path(tempfile.gettempdir()) / f"cogport-tests-npm-{slug}-{digest}"


def installed(*packages: str) -> Path:
    """The directory where ``packages`` (each ``name@exact-version``) are installed, installing them first."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the JS client tests (install Node.js 20 and npm)")
    cache = cache_dir(packages)
    cache.mkdir(parents=True, exist_ok=True)
    marker = cache / INSTALLED
    wanted = "\n".join(packages)
    with (cache / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.is_file() or marker.read_text() != wanted:
            if not (cache / "package.json").is_file():
                (cache / "package.json").write_text('{"name": "cogport-js-clients", "private": true}\n')
            result = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--silent", "--save-exact", *packages],
                cwd=cache,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if result.returncode != 0:
                pytest.fail(f"npm install {' '.join(packages)} failed: {result.stderr[-500:]}")
            marker.write_text(wanted)
    return cache


def run_script(
    cache: Path,
    script: str | Path,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = 180,
) -> Any:
    """Run ``script`` (a file name in ``tests/clients_js/``, or a path) with node in ``cache``; its last stdout
    line, parsed as JSON."""
    source = Path(script) if os.sep in str(script) else SCRIPTS / script
    target = cache / source.name
    text = source.read_text()
    if not target.is_file() or target.read_text() != text:
        staging = cache / f".{source.name}.{os.getpid()}"
        staging.write_text(text)
        staging.replace(target)  # atomic: another worker may be running the same script
    result = subprocess.run(
        ["node", str(target), *args],
        cwd=cache,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert result.returncode == 0, f"node {source.name} failed:\n{result.stderr[-4000:]}\n{result.stdout[-2000:]}"
    lines = result.stdout.strip().splitlines()
    assert lines, f"node {source.name} printed nothing:\n{result.stderr[-2000:]}"
    return json.loads(lines[-1])
