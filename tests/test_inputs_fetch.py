"""Input URLs are fetched by cogport, not by the model: pinned to the address checked, redirects checked
again, bounded in size and time. A real server, a real model, and a file server on another loopback address
(127.0.0.2) that the input policy admits by name (``COGPORT_INPUTS__ALLOWED_HOSTS``); everything else on
loopback stays refused, so redirects to 127.0.0.1 and to the metadata address must fail the run."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cogport import netfetch
from cogport.lifecycle.files_in import input_policy
from cogport.netpolicy import Address, parse_address
from cogport.settings import Settings
from tests.conftest import LiveServer
from tests.support import predictions
from tests.support.models import push_fixture
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
BODY = bytes(range(256)) * 64  # 16 KiB: above the inline limit set below, so it is stored and signed
SMALL = b"small input"
SECRET = b"a service on the host's loopback"


@dataclass
class Origin:
    """File servers on 127.0.0.2 and 127.0.0.1 (the same port), recording every request."""

    port: int
    seen: list[tuple[str, str, str, str]] = field(default_factory=list)
    """(address served, path, Host, User-Agent) of every request."""
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str, host: str = "127.0.0.2") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self, address: str) -> list[str]:
        return [path for served, path, _, _ in self.seen if served == address]


def _handler(origin: Origin, address: str) -> type[BaseHTTPRequestHandler]:
    redirects = {
        "/to-local": f"http://127.0.0.1:{origin.port}/secret",
        "/to-metadata": "http://169.254.169.254/latest/meta-data/",
        "/to-decimal-loopback": f"http://2130706433:{origin.port}/secret",
        "/to-data": "/data.bin",  # relative: resolved against the URL that redirected
    }

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            origin.seen.append((address, self.path, self.headers.get("Host", ""), self.headers.get("User-Agent", "")))
            location = redirects.get(self.path)
            if self.path.startswith("/loop/"):
                location = f"/loop/{int(self.path.rsplit('/', 1)[1]) + 1}"
            if location is not None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path == "/stall.bin":
                origin.release.wait(30)
            body = SECRET if address == "127.0.0.1" else {"/small.txt": SMALL}.get(self.path, BODY)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain" if self.path.endswith(".txt") else "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _bind_pair() -> tuple[socket.socket, socket.socket]:
    for _ in range(50):
        public = socket.socket()
        public.bind(("127.0.0.2", 0))
        port = public.getsockname()[1]
        local = socket.socket()
        try:
            local.bind(("127.0.0.1", port))
        except OSError:
            public.close()
            local.close()
            continue
        return public, local
    raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")


@contextmanager
def _serving() -> Iterator[Origin]:
    public, local = _bind_pair()
    origin = Origin(port=public.getsockname()[1])
    servers = []
    for sock, address in ((public, "127.0.0.2"), (local, "127.0.0.1")):
        server = ThreadingHTTPServer((address, origin.port), _handler(origin, address), bind_and_activate=False)
        server.socket.close()
        server.socket = sock
        server.daemon_threads = True
        sock.listen()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    try:
        yield origin
    finally:
        origin.release.set()
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def origin() -> Iterator[Origin]:
    with _serving() as served:
        yield served


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.files_inline_max_bytes = 1024
    settings.inputs.allowed_hosts = ["127.0.0.2"]
    settings.inputs.max_redirects = 3
    return settings


@pytest.fixture
def version(live_server: LiveServer, tmp_path: Path) -> str:
    return push_fixture(live_server, tmp_path, "file_digest")


def _digest(body: bytes, suffix: str) -> str:
    return f"{len(body)} {hashlib.sha256(body).hexdigest()} {suffix}"


def test_the_model_gets_the_bytes_cogport_fetched(live_server: LiveServer, version: str, origin: Origin) -> None:
    """Large (stored, handed over by a signed internal URL) and small (inline) bodies, and a relative
    redirect: the model reads exactly the bytes, and only cogport ever asked the origin for them."""
    for path, body, suffix in (("/data.bin", BODY, ".bin"), ("/small.txt", SMALL, ".txt"), ("/to-data", BODY, ".bin")):
        done = predictions.create(live_server, version, {"file": origin.url(path)}, headers={"Prefer": "wait=60"})
        done = predictions.wait_for(live_server, done["id"], {"succeeded", "failed", "canceled"})
        assert done["status"] == "succeeded", done
        assert done["output"] == _digest(body, suffix)
        assert done["input"] == {"file": origin.url(path)}  # what the caller sent, as Replicate shows it
    agents = {agent for served, _, _, agent in origin.seen if served == "127.0.0.2"}
    assert agents == {"cogport"}, origin.seen  # never the model's downloader
    assert origin.paths("127.0.0.1") == []


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/to-local", "is refused"),
        ("/to-decimal-loopback", "is refused"),
        ("/to-metadata", "is refused"),
        ("/loop/0", "more than 3 redirects"),
    ],
)
def test_redirects_are_checked_again_and_bounded(
    live_server: LiveServer, version: str, origin: Origin, path: str, reason: str
) -> None:
    done = predictions.create(live_server, version, {"file": origin.url(path)}, headers={"Prefer": "wait=60"})
    done = predictions.wait_for(live_server, done["id"], {"succeeded", "failed", "canceled"})
    assert done["status"] == "failed", done
    assert "input.file: file could not be fetched" in done["error"] and reason in done["error"], done["error"]
    assert origin.paths("127.0.0.1") == []  # the redirect target was never contacted


def test_a_body_over_the_limit_fails_the_run(live_server: LiveServer, version: str, origin: Origin) -> None:
    fetcher = live_server.app.state.services.get("dispatcher").fetcher  # type: ignore[union-attr]
    fetcher.limits = replace(fetcher.limits, max_bytes=len(BODY) - 1)
    done = predictions.create(live_server, version, {"file": origin.url("/data.bin")}, headers={"Prefer": "wait=60"})
    done = predictions.wait_for(live_server, done["id"], {"succeeded", "failed", "canceled"})
    assert done["status"] == "failed" and "larger than the limit" in done["error"], done


def test_a_run_whose_input_is_still_downloading_can_be_canceled(
    live_server: LiveServer, version: str, origin: Origin
) -> None:
    created = predictions.create(live_server, version, {"file": origin.url("/stall.bin")})
    for _ in range(400):
        if "/stall.bin" in origin.paths("127.0.0.2"):
            break
        threading.Event().wait(0.025)
    canceled = predictions.cancel(live_server, created["id"])
    done = predictions.wait_for(live_server, canceled["id"], {"succeeded", "failed", "canceled"}, timeout=20)
    assert done["status"] == "canceled", done


def test_input_urls_refused_at_create_time(live_server: LiveServer, version: str, origin: Origin) -> None:
    import httpx

    for url in (origin.url("/secret", host="127.0.0.1"), "http://169.254.169.254/", "http://[::1]/x"):
        response = httpx.post(
            f"{live_server.url}/v1/predictions",
            json={"version": version, "input": {"file": url}},
            headers=predictions.AUTH,
        )
        assert response.status_code == 422, (url, response.text)
    assert origin.paths("127.0.0.1") == []


async def test_the_connection_goes_to_the_address_that_was_checked(settings: Settings, origin: Origin) -> None:
    """DNS rebinding: a name that answers a permitted address when checked and the host's loopback a moment
    later. The fetch must use the checked answer (and send the name as Host); it resolves once per hop."""
    answers: list[list[Address]] = [[parse_address("127.0.0.2")], [parse_address("127.0.0.1")]]  # type: ignore[list-item]
    asked: list[str] = []

    async def rebinding(host: str, port: int) -> list[Address]:
        asked.append(host)
        return answers[min(len(asked) - 1, 1)]

    settings.inputs.allowed_hosts = ["files.test"]
    policy = replace(input_policy(settings), resolver=rebinding)
    limits = netfetch.FetchLimits(max_bytes=1 << 20, timeout=10)
    url = f"http://files.test:{origin.port}/data.bin"
    async with netfetch.client() as http, netfetch.fetch(http, policy, url, limits) as fetched:
        body = b"".join([chunk async for chunk in fetched.chunks])
    assert body == BODY
    assert asked == ["files.test"]
    assert origin.seen == [("127.0.0.2", "/data.bin", f"files.test:{origin.port}", "cogport")]
