"""The README's quickstart on a pip install: the built wheel, installed into a fresh venv, serves and
registers ``examples/hello-world`` from the examples it ships, and the official client runs it (issue 18).

The wheel is built from this checkout with uv (``uv build --wheel``) and installed with ``uv pip install``
(dependencies from uv's cache, else the index); the server runs from a folder outside the checkout, so
nothing of the source tree can stand in for what the wheel lacks. On a PostgreSQL run it gets the test's
database and a schema of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import replicate
from uv import find_uv_bin

from tests.conftest import ADMIN_TOKEN, PG_URL, _drop_schema
from tests.support.processes import free_port
from tests.support.pushing import REPO, UV_CACHE

UV = find_uv_bin()
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _run(*argv: str | Path, cwd: Path, timeout: float = 300) -> str:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, f"{argv} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    """A fresh venv with the wheel built from this checkout; returns its ``bin/``."""
    dist = tmp_path / "dist"
    _run(UV, "build", "--wheel", "--out-dir", dist, REPO, cwd=tmp_path)
    [wheel] = dist.glob("cogport-*.whl")
    venv = tmp_path / "venv"
    _run(UV, "venv", "--python", Path(sys.base_prefix) / "bin" / "python3", venv, cwd=tmp_path)
    _run(UV, "pip", "install", "--python", venv / "bin" / "python", wheel, cwd=tmp_path, timeout=600)
    return venv / "bin"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A fresh store: a data dir, and on PostgreSQL runs a new schema (dropped afterwards)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COGPORT_", "REPLICATE_", "VIRTUAL_ENV"))}
    env |= {
        "COGPORT_ADMIN_TOKEN": ADMIN_TOKEN,
        "COGPORT_DETECT_GPUS": "false",
        "COGPORT_BUILD__UV_CACHE_DIR": str(UV_CACHE),  # the tests' warm cache: the example builds quickly
    }
    schema = None
    if PG_URL:
        schema = f"wheel_{uuid.uuid4().hex[:12]}"
        env |= {"COGPORT_DATABASE_URL": PG_URL, "COGPORT_DATABASE_SCHEMA": schema}
    yield env
    if schema:
        _drop_schema(schema)


def _wait_until_serving(process: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if f"Uvicorn running on {url}" in log.read_text():
            return
        assert process.poll() is None, f"cogport serve exited {process.returncode}:\n{log.read_text()[-4000:]}"
        time.sleep(0.1)
    raise AssertionError(f"cogport serve did not start:\n{log.read_text()[-4000:]}")


def _wait_for_example(url: str, log: Path) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/v1/models/examples/hello-world", headers=AUTH)
        if response.status_code == 200 and response.json()["latest_version"] is not None:
            return
        assert "not registered" not in log.read_text(), log.read_text()[-4000:]
        time.sleep(0.2)
    raise AssertionError(f"examples/hello-world was not built:\n{log.read_text()[-4000:]}")


def test_the_installed_wheel_serves_and_runs_the_hello_world_example(
    installed: Path, env: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    elsewhere = tmp_path / "elsewhere"  # not the checkout: the server finds only what the wheel holds
    elsewhere.mkdir()
    log = tmp_path / "serve.log"
    port = free_port()  # a port of its own: the server tells coglet its address from the port it was given
    url = f"http://127.0.0.1:{port}"
    argv = [installed / "cogport", "serve", "--host", "127.0.0.1", "--port", port, "--data-dir", tmp_path / "data"]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [str(a) for a in argv], cwd=elsewhere, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        _wait_until_serving(process, url, log)
        _wait_for_example(url, log)
        client = replicate.Client(api_token=ADMIN_TOKEN, base_url=url)
        client.poll_interval = 0.05
        assert client.run("examples/hello-world", input={"text": "world"}) == "hello world"
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    print(f"\nserve, register and run examples/hello-world from the wheel: {time.monotonic() - started:.1f}s")
