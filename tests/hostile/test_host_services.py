"""Finding 5 (host services): a model reaches none of the host's services, directly or through cogport.

With a live server (its port is cogport's internal URL, where instances upload output files): the
``hostsvc`` model connects straight to loopback services (PostgreSQL, Redis, MySQL, RabbitMQ, a listener
of the test's own, the API itself), asks the egress proxy for loopback, private, link-local and metadata
targets, and sends the gateway at cogport's address requests other than its own uploads. ``bigfile``
returns output files either side of ``COGPORT_SANDBOX__UPLOAD_MAX_MB``.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from cogport.files.tokens import UploadTokens
from cogport.files.urls import upload_url
from cogport.settings import SandboxSettings
from tests.conftest import LiveServer
from tests.hostile.conftest import MakeBackend, found, hostile, predict

HOST_SERVICES = [5432, 6379, 3306, 5672]
"""PostgreSQL, Redis, MySQL, RabbitMQ: on loopback wherever they run on the host (CI: some of them)."""
REFUSED_TARGETS = ["10.0.0.1:443", "169.254.169.254:80", "192.168.1.1:443", "127.0.0.1:5432", "[::1]:6379"]


@pytest.fixture
def canary() -> Iterator[tuple[int, list[str]]]:
    """A loopback listener of the test's own (a host service that surely runs): its port, and what connected."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(str(peer))
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(5)
    server.close()


def _tokens(server: LiveServer) -> UploadTokens:
    tokens: UploadTokens = server.app.state.upload_tokens
    return tokens


async def test_host_services_are_out_of_reach(
    make_backend: MakeBackend, live_server: LiveServer, canary: tuple[int, list[str]]
) -> None:
    canary_port, accepted = canary
    api_port = urlsplit(live_server.url).port
    assert api_port is not None
    token = _tokens(live_server).issue("hostile")
    backend = await make_backend(base=live_server.settings, upload_url=upload_url(live_server.settings, token))
    attempts = {
        "direct": [*HOST_SERVICES, canary_port, api_port],
        "proxied": [*REFUSED_TARGETS, f"127.0.0.1:{api_port}", f"127.0.0.1:{canary_port}"],
        "internal": f"127.0.0.1:{api_port}",
        "gateway": [
            ["GET", "/v1/predictions"],
            ["GET", "/v1/account"],
            ["PUT", "/internal/uploads/another-instance-token/x.bin"],
            ["PUT", f"/internal/uploads/{token}/x.bin"],  # even knowing the real token
            ["GET", "/v1/files/abc/download"],  # unsigned
            ["POST", "/internal/uploads/sandboxed/x.bin"],
        ],
    }
    report = found(await predict(backend, hostile("hostsvc", tenant=21), arg=json.dumps(attempts)))

    # Straight to the host's loopback: nothing there (the sandbox's loopback is its own) ...
    for port in [*HOST_SERVICES, canary_port]:
        assert report["direct"][str(port)] == "ECONNREFUSED", (port, report["direct"])
    assert accepted == []
    # ... but cogport's own port, where the gateway answers instead of the API (which would say 401).
    assert report["direct"][str(api_port)].startswith("HTTP/1.1 403"), report["direct"]
    # The egress proxy refuses loopback, private, link-local and metadata targets, both ways.
    for target, answer in [*report["proxied_get"].items(), *report["proxied_connect"].items()]:
        assert answer.startswith("HTTP/1.1 403"), (target, answer)
    assert report["requests_metadata"][0] == 403 and "refused" in report["requests_metadata"][1], report
    # The gateway passes nothing but the instance's own uploads and signed downloads.
    for request, answer in report["gateway"].items():
        assert answer.startswith("HTTP/1.1 403"), (request, answer)


async def test_output_uploads_are_bounded(make_backend: MakeBackend, live_server: LiveServer) -> None:
    token = _tokens(live_server).issue("hostile")
    backend = await make_backend(
        SandboxSettings(upload_max_mb=1), base=live_server.settings, upload_url=upload_url(live_server.settings, token)
    )
    version = hostile("bigfile", tenant=22)
    just_under = (1 << 20) - 4096
    small = await predict(backend, version, size=just_under)
    assert small["status"] == "succeeded", small
    async with httpx.AsyncClient() as client:
        got = await client.get(small["output"])
    assert got.status_code == 200 and len(got.content) == just_under

    large = await predict(backend, version, size=2 << 20)
    assert large["status"] == "failed", large
    # The gateway reads the rest, drops it and answers 413 naming the bound; the instance's log says so too.
    assert "upload" in (large["error"] or "").lower(), large
    assert "upload limit, 1 MiB: COGPORT_SANDBOX__UPLOAD_MAX_MB" in (large["error"] or ""), large
    # The instance is fine: the next small file goes through.
    assert (await predict(backend, version, size=10))["status"] == "succeeded"
