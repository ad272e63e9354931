"""Helpers for push and build tests: warm shared caches, the ``cogport push`` subprocess, and in-process pushes.

Builds in tests share one uv cache for every run on the machine (a fixed directory under the temp dir, so
repeated runs are warm) and one venv directory per test session (so tests with the same requirements
build the venv once).
"""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cogport.build import packing
from cogport.settings import Settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
SCHEMAS = REPO / "tests" / "data" / "schemas"
UV_CACHE = Path(tempfile.gettempdir()) / "cogport-test-uv-cache-v1"
"""Shared by every test run on this machine, so builds after the first are warm."""
CLI = str(Path(sys.executable).with_name("cogport"))


def use_shared_build_dirs(settings: Settings, venvs: Path) -> None:
    settings.build.uv_cache_dir = UV_CACHE
    settings.build.venvs_dir = venvs


@dataclass
class PushResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def version(self) -> str:
        lines = self.stdout.strip().splitlines()
        return lines[-1] if lines else ""


def cli_push(base_url: str, token: str, directory: Path, model: str, *extra: str, timeout: float = 240) -> PushResult:
    """Run ``cogport push`` as a user would."""
    env = {**os.environ, "COGPORT_BASE_URL": base_url, "COGPORT_API_TOKEN": token, "NO_COLOR": "1", "COLUMNS": "200"}
    # The CLI gives up (printing the log so far) before the subprocess timeout would hide what happened.
    argv = [CLI, "push", str(directory), "--model", model, "--timeout", str(timeout - 30), *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    return PushResult(proc.returncode, proc.stdout, proc.stderr)


def create_model(base_url: str, token: str, owner: str, name: str, visibility: str = "private") -> None:
    response = httpx.post(
        f"{base_url}/v1/models",
        json={"owner": owner, "name": name, "visibility": visibility, "hardware": "cpu"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text


async def push_dir(client: httpx.AsyncClient, directory: Path, model: str, *, wait_s: float = 240) -> dict[str, Any]:
    """Push through the API (no subprocess) and wait for the build to finish; returns the final build."""
    archive = packing.pack_bytes(directory, packing.model_files(directory))
    response = await client.post(
        f"/v1/models/{model}/versions", files={"source": ("model.tar.gz", io.BytesIO(archive), "application/gzip")}
    )
    assert response.status_code == 201, response.text
    build: dict[str, Any] = response.json()
    return await wait_build(client, build["id"], wait_s=wait_s)


async def wait_build(client: httpx.AsyncClient, build_id: str, *, wait_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    while True:
        response = await client.get(f"/v1/builds/{build_id}")
        assert response.status_code == 200, response.text
        build: dict[str, Any] = response.json()
        if build["status"] in ("succeeded", "failed"):
            return build
        assert time.monotonic() < deadline, f"build {build_id} did not finish: {build}"
        await asyncio.sleep(0.05)


def write_model(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture(scope="session")
def shared_venvs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("venvs")


@pytest.fixture
def shared_build_dirs(settings: Settings, shared_venvs: Path) -> Settings:
    """Point the test's settings at the shared uv cache and venvs (before the app is created)."""
    use_shared_build_dirs(settings, shared_venvs)
    return settings
