"""Own file URLs under whatever name the server is reached by (a reverse proxy, a LAN name), without
``COGPORT_PUBLIC_URL``: the request's host is only known when the run is created, and a queued run is
dispatched later, where it is not (issue 18).

A real server and model; the requests go to its loopback address with another ``Host`` (what a reverse
proxy that keeps the client's ``Host`` sends), so every URL it answers with is on that name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

from cogport.settings import Settings
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support import predictions
from tests.support.models import push_fixture
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
HOST = "cogport.example:8080"
PROXIED = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Host": HOST}
SMALL = b"a small upload"
LARGE = bytes(range(256)) * 16  # 4 KiB: above the inline limit set below, handed over by a signed URL


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.files_inline_max_bytes = 1024
    assert not settings.public_url
    return settings


@pytest.fixture
def version(live_server: LiveServer, tmp_path: Path) -> str:
    return push_fixture(live_server, tmp_path, "file_digest")


def upload(server: LiveServer, body: bytes, name: str) -> str:
    response = httpx.post(f"{server.url}/v1/files", files={"content": (name, body)}, headers=PROXIED)
    assert response.status_code == 201, response.text
    url: str = response.json()["urls"]["get"]
    assert url.startswith(f"http://{HOST}/v1/files/")  # the name the caller used, as clients put it in inputs
    return url


def create(server: LiveServer, version: str, file: str, **headers: str) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/v1/predictions",
        json={"version": version, "input": {"file": file}},
        headers={**PROXIED, **headers},
        timeout=70,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(("body", "name"), [(SMALL, "small.txt"), (LARGE, "large.bin")])
def test_an_uploaded_file_in_a_queued_prediction(live_server: LiveServer, version: str, body: bytes, name: str) -> None:
    url = upload(live_server, body, name)
    expected = f"{len(body)} {hashlib.sha256(body).hexdigest()} {Path(name).suffix}"
    queued = create(live_server, version, url)  # no Prefer: wait, so dispatched later
    assert queued["status"] == "starting"
    done = predictions.wait_for(live_server, queued["id"], {"succeeded", "failed", "canceled"})
    assert done["status"] == "succeeded", done["error"]
    assert done["output"] == expected
    assert done["input"] == {"file": url}  # what the caller sent
    waited = create(live_server, version, url, Prefer="wait=60")
    assert (waited["status"], waited["output"]) == ("succeeded", expected)
