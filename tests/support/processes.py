"""``cogport serve`` as a real subprocess (by URL): to kill it with -9, restart it, or run several at once
on one database and data directory, as an operator would behind a load balancer."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN
from tests.support.pushing import UV_CACHE

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLI = str(Path(sys.executable).with_name("cogport"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerProcess:
    """One ``cogport serve`` on a free loopback port; ``database_url`` empty: SQLite under ``data_dir``."""

    def __init__(
        self,
        data_dir: Path,
        venvs: Path,
        *,
        database_url: str = "",
        schema: str | None = None,
        log: Path | None = None,
        binds: list[Path] | None = None,
        **env: str,
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("COGPORT_", "REPLICATE_"))},
            "COGPORT_ADMIN_TOKEN": ADMIN_TOKEN,
            "COGPORT_REGISTER_EXAMPLES": "false",
            "COGPORT_DETECT_GPUS": "false",
            "COGPORT_LEASE_SECONDS": "2",
            "COGPORT_DATABASE_URL": database_url,
            "COGPORT_BUILD__UV_CACHE_DIR": str(UV_CACHE),
            "COGPORT_BUILD__VENVS_DIR": str(venvs),
            "COGPORT_RUNTIME__MAX_INSTANCES_PER_VERSION": "1",
            **env,
        }
        if schema:
            self.env["COGPORT_DATABASE_SCHEMA"] = schema
        for path in binds or ():
            Path(path).chmod(0o777)  # models run as uids of their own
        if binds:
            self.env["COGPORT_RUNTIME__SANDBOX_BINDS"] = json.dumps([str(path) for path in binds])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        sink = self.log.open("ab") if self.log is not None else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [CLI, "serve", "--port", str(self.port), "--data-dir", str(self.data_dir)],
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        finally:
            if self.log is not None and not isinstance(sink, int):
                sink.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"cogport serve exited with {self.process.returncode}")
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
                self.process.wait()
