"""Python client libraries in venvs of their own (issue 18): pinned, installed by the tests themselves.

The libraries people reach Replicate through (``replicate`` 1.1, LangChain, LlamaIndex, LiteLLM) conflict with
our lock or are heavy, so each requirement set gets a venv under the temp dir, keyed by the set and the
interpreter, made once per machine under a file lock (the npm install of tests/test_files_js.py does the same)
and reused by later runs. Client code runs there as a subprocess script from ``tests/clients_py/``, configured
as users configure it: ``REPLICATE_API_TOKEN`` and ``REPLICATE_BASE_URL`` in its environment.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cogport.build import interpreters
from cogport.build.errors import BuildError
from tests.support.pushing import UV_CACHE

SCRIPTS = Path(__file__).resolve().parents[1] / "clients_py"
PYTHONS = ("3.12", "3.13")
"""replicate 1.1's ``use.py`` is written in 3.12 syntax (``class Run[O]:``) while its metadata says >=3.8;
the other libraries run there too. cogport finds the interpreter as its builds do (examples/image needs 3.12)."""
_MARKER = ".installed"


def _uv() -> str:
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if found is None:
        pytest.fail("uv is needed to install the Python client libraries (pip install uv)")
    return found


@dataclass(frozen=True)
class ClientVenv:
    python: Path

    def run(self, script: str, *args: str, env: dict[str, str], timeout: float = 180) -> Any:
        """Run ``tests/clients_py/<script>.py`` with ``args``; returns the JSON of its last output line."""
        result = subprocess.run(
            [str(self.python), str(SCRIPTS / f"{script}.py"), *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        assert result.returncode == 0, f"{script} failed:\n{result.stdout[-2000:]}\n{result.stderr[-6000:]}"
        lines = result.stdout.strip().splitlines()
        assert lines, f"{script} printed nothing:\n{result.stderr[-3000:]}"
        return json.loads(lines[-1])


def _interpreter(uv: str) -> interpreters.Interpreter:
    problems = []
    for wanted in PYTHONS:
        try:
            return interpreters.find(wanted, [], uv)[0]
        except BuildError as error:
            problems.append(str(error))
    pytest.fail(f"the Python client tests need Python {' or '.join(PYTHONS)} on this machine: {problems[0]}")


def client_venv(*requirements: str) -> ClientVenv:
    """A venv with exactly ``requirements`` installed (made on first use, then cached in the temp dir)."""
    uv = _uv()
    interpreter = _interpreter(uv)
    key = hashlib.sha256("\n".join([str(interpreter.path), interpreter.text, *sorted(requirements)]).encode())
    root = Path(tempfile.gettempdir()) / f"cogport-tests-pyclients-{key.hexdigest()[:16]}"
    venv = root / "venv"
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / _MARKER).is_file():
            shutil.rmtree(venv, ignore_errors=True)
            env = {**os.environ, "UV_CACHE_DIR": str(UV_CACHE), "UV_PYTHON_DOWNLOADS": "never"}
            env.pop("VIRTUAL_ENV", None)
            for argv in (
                [uv, "venv", "--quiet", "--python", str(interpreter.path), str(venv)],
                [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), *requirements],
            ):
                done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
                if done.returncode != 0:
                    pytest.fail(f"{' '.join(argv[:3])} {' '.join(requirements)} failed: {done.stderr[-2000:]}")
            (root / _MARKER).write_text("\n".join(requirements) + "\n")
    return ClientVenv(venv / "bin" / "python")


def client_env(base_url: str, token: str, tmp: Path, **extra: str) -> dict[str, str]:
    """The script's whole environment: what a user sets, nothing of this process's venv. ``TMPDIR`` is the
    test's own (replicate 1.1's URLPath downloads file outputs there)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(tmp)),
        "TMPDIR": str(tmp),
        "PYTHONUNBUFFERED": "1",
        "REPLICATE_API_TOKEN": token,
        "REPLICATE_BASE_URL": base_url,
        "REPLICATE_POLL_INTERVAL": "0.05",
        **extra,
    }


def proxy_port(url: str) -> int:
    """The port of a proxy's URL: what tests/clients_py/connections.py should report, and nothing else."""
    return int(url.rsplit(":", 1)[1])
