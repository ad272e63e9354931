"""``cogport serve`` as a subprocess: first start creates the admin and prints its token once; SIGTERM exits 0.

On a PostgreSQL run the server gets the test's database and a schema of its own, as an operator
would configure it (``COGPORT_DATABASE_URL``); otherwise it uses SQLite under ``--data-dir``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import PG_URL, _drop_schema

COGPORT = str(Path(sys.executable).with_name("cogport"))
ANNOUNCEMENT = "Its API token (shown only this once):"


@dataclass
class Running:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stderr(self) -> str:
        return self.log.read_text()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Environment for a fresh store: a data dir, and on PostgreSQL runs a new schema (dropped afterwards)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COGPORT_", "REPLICATE_"))}
    env["COGPORT_DETECT_GPUS"] = "false"
    env["COGPORT_REGISTER_EXAMPLES"] = "false"  # no example builds: this is about start and stop
    schema = None
    if PG_URL:
        schema = f"serve_{uuid.uuid4().hex[:12]}"
        env["COGPORT_DATABASE_URL"] = PG_URL
        env["COGPORT_DATABASE_SCHEMA"] = schema
    yield env
    if schema:
        _drop_schema(schema)


@contextmanager
def serve(data_dir: Path, env: dict[str, str], log: Path) -> Iterator[Running]:
    """Start ``cogport serve`` on a port the OS picks and wait until it answers."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [COGPORT, "serve", "--host", "127.0.0.1", "--port", "0", "--data-dir", str(data_dir)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        url = _wait_for_url(process, log)
        yield Running(url, process, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _wait_for_url(process: subprocess.Popen[bytes], log: Path) -> str:
    for _ in range(1200):
        match = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_text())
        if match:
            return match.group(1)
        if process.poll() is not None:
            raise AssertionError(f"cogport serve exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"cogport serve did not start:\n{log.read_text()}")


def _stop(running: Running) -> int:
    running.process.send_signal(signal.SIGTERM)
    return running.process.wait(timeout=60)


def _username(url: str, token: str) -> str:
    response = httpx.get(f"{url}/v1/account", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    username: str = response.json()["username"]
    return username


def test_first_start_prints_the_admin_token_once(tmp_path: Path, store: dict[str, str]) -> None:
    data_dir = tmp_path / "data"
    with serve(data_dir, store, tmp_path / "first.log") as first:
        output = first.stderr()
        assert output.count(ANNOUNCEMENT) == 1, output
        token = output.split(ANNOUNCEMENT, 1)[1].split()[0]
        assert token.startswith("r8_")
        assert _username(first.url, token) == "admin"
        accounts = httpx.get(f"{first.url}/admin/v1/accounts", headers={"Authorization": f"Bearer {token}"})
        assert [(a["username"], a["is_admin"]) for a in accounts.json()] == [("admin", True)]
        assert _stop(first) == 0
    assert "Application shutdown complete" in first.stderr()
    if not PG_URL:
        assert (data_dir / "cogport.db").is_file()

    with serve(data_dir, store, tmp_path / "second.log") as second:
        assert ANNOUNCEMENT not in second.stderr()
        assert token not in second.stderr()
        assert _username(second.url, token) == "admin"  # the same store, the same admin
        assert _stop(second) == 0


def test_admin_token_from_the_environment(tmp_path: Path, store: dict[str, str]) -> None:
    chosen = "r8_" + "c" * 37
    env = {**store, "COGPORT_ADMIN_TOKEN": chosen}
    with serve(tmp_path / "data", env, tmp_path / "serve.log") as running:
        assert ANNOUNCEMENT not in running.stderr()
        assert chosen not in running.stderr()
        assert _username(running.url, chosen) == "admin"
        assert _stop(running) == 0


def test_placeholder_admin_token_is_refused(tmp_path: Path, store: dict[str, str]) -> None:
    env = {**store, "COGPORT_ADMIN_TOKEN": "changeme"}
    result = subprocess.run(
        [COGPORT, "serve", "--port", "0", "--data-dir", str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "COGPORT_ADMIN_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr
