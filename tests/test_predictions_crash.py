"""Crash safety: ``kill -9`` of the server and a restart lose nothing.

Queued predictions still run; the one that was running ends ``failed`` with a clear error; none stays
``starting`` or ``processing``. The server runs as a real ``cogport serve`` subprocess.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cogport.settings import Settings
from tests.conftest import ADMIN_TOKEN, PG_URL
from tests.support.models import fixture_dir, push
from tests.support.predictions import create, wait_for
from tests.support.pushing import UV_CACHE

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLI = str(Path(sys.executable).with_name("cogport"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    def __init__(self, settings: Settings, venvs: Path) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "COGPORT_ADMIN_TOKEN": ADMIN_TOKEN,
            "COGPORT_REGISTER_EXAMPLES": "false",
            "COGPORT_DETECT_GPUS": "false",
            "COGPORT_LEASE_SECONDS": "2",
            "COGPORT_DATABASE_URL": PG_URL,
            "COGPORT_DATABASE_SCHEMA": settings.database_schema or "",
            "COGPORT_BUILD__UV_CACHE_DIR": str(UV_CACHE),
            "COGPORT_BUILD__VENVS_DIR": str(venvs),
            "COGPORT_RUNTIME__MAX_INSTANCES_PER_VERSION": "1",
        }
        if not settings.database_schema:
            self.env.pop("COGPORT_DATABASE_SCHEMA")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [CLI, "serve", "--port", str(self.port), "--data-dir", str(self.settings.data_dir)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v1/account", headers=AUTH, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise AssertionError("the server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(settings, tmp_path_factory.mktemp("venvs"))
    yield srv
    srv.stop()


def test_kill_9_and_restart_loses_nothing(server: Server, tmp_path: Path) -> None:
    server.start()
    version = push(server.url, fixture_dir(tmp_path, "slow"), "slow")
    running = create(server.url, version, {"seconds": 120})
    wait_for(server.url, running["id"], {"processing"})
    queued = [create(server.url, version, {"seconds": 0.01}) for _ in range(3)]

    server.kill()
    server.start()

    failed = wait_for(server.url, running["id"], {"failed", "succeeded", "canceled"})
    assert failed["status"] == "failed"
    assert "server running it stopped" in failed["error"]
    for prediction in queued:
        done = wait_for(server.url, prediction["id"], {"succeeded", "failed", "canceled"})
        assert done["status"] == "succeeded", done
        assert done["output"] == "awake"
