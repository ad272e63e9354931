"""A streaming model with file outputs: its ``output`` events carry output file URLs on the base the client
used (as GET shows them), fetchable without a token."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import LiveServer
from tests.support import sse
from tests.support.models import push_fixture
from tests.support.predictions import create, get, wait_for
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")


def test_file_outputs_stream_as_urls_on_the_clients_base(live_server: LiveServer, tmp_path: Path) -> None:
    version = push_fixture(live_server, tmp_path, "file_tokens")
    # Reached as "localhost" rather than the server's own 127.0.0.1 (no public_url is set).
    base = live_server.url.replace("127.0.0.1", "localhost")
    created = create(base, version, {"count": 3})
    assert created["urls"]["stream"].startswith(f"{base}/v1/streams/")
    events = sse.read_all(created["urls"]["stream"])
    urls = sse.outputs(events)
    assert [urlsplit(url).path.rsplit("/", 1)[1] for url in urls] == ["output-0.txt", "output-1.txt", "output-2.txt"]
    for url in urls:
        assert url.startswith(f"{base}/v1/files/outputs/")
        assert httpx.get(url).text == "file " + url[-5]
    assert wait_for(base, created["id"], {"succeeded"})["output"] == urls
    # The same stream read through the other name gives that name's URLs.
    other = created["urls"]["stream"].replace(base, live_server.url)
    assert [urlsplit(u).path for u in sse.outputs(sse.read_all(other))] == [urlsplit(u).path for u in urls]
    assert all(u.startswith(live_server.url) for u in sse.outputs(sse.read_all(other)))
    assert get(live_server, created["id"])["output"][0].startswith(live_server.url)


def _names_and_contents(urls: list[str]) -> list[tuple[str, str]]:
    return [(urlsplit(url).path.rsplit("/", 1)[1], httpx.get(url).text) for url in urls]


ORDERED = [(f"output-{i}.txt", f"file {i}") for i in range(8)]
"""What 8 files look like, in the model's order (coglet's ``data:`` URLs carry no name: see docs/files.md)."""


def test_file_outputs_keep_their_order(live_server: LiveServer, tmp_path: Path) -> None:
    version = push_fixture(live_server, tmp_path, "file_tokens")
    created = create(live_server, version, {"count": 8})
    urls = sse.outputs(sse.read_all(created["urls"]["stream"]))
    assert _names_and_contents(urls) == ORDERED
    assert all(urlsplit(url).path.startswith("/v1/files/outputs/") for url in urls)
    assert wait_for(live_server, created["id"], {"succeeded"})["output"] == urls


def test_a_returned_list_of_files_keeps_its_order(live_server: LiveServer, tmp_path: Path) -> None:
    version = push_fixture(live_server, tmp_path, "file_list")
    created = create(live_server, version, {"count": 8})
    output = wait_for(live_server, created["id"], {"succeeded"})["output"]
    assert _names_and_contents(output) == ORDERED
    assert all(url.startswith(f"{live_server.url}/v1/files/outputs/") for url in output)
