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
    # In some order: coglet 0.23.1 puts uploaded file outputs in upload-completion order (see below).
    assert sorted(urlsplit(url).path.rsplit("/", 1)[1] for url in urls) == ["file0.txt", "file1.txt", "file2.txt"]
    for url in urls:
        assert url.startswith(f"{base}/v1/files/outputs/")
        assert httpx.get(url).text == "file " + url[-5]
    assert wait_for(base, created["id"], {"succeeded"})["output"] == urls
    # The same stream read through the other name gives that name's URLs.
    other = created["urls"]["stream"].replace(base, live_server.url)
    assert [urlsplit(u).path for u in sse.outputs(sse.read_all(other))] == [urlsplit(u).path for u in urls]
    assert all(u.startswith(live_server.url) for u in sse.outputs(sse.read_all(other)))
    assert get(live_server, created["id"])["output"][0].startswith(live_server.url)


@pytest.mark.xfail(
    reason="coglet 0.23.1 uploads file outputs concurrently (--upload-url) and reports them in completion order, "
    "for iterators and lists alike; without --upload-url (data: URLs) the order is kept",
    strict=False,
)
def test_file_outputs_keep_their_order(live_server: LiveServer, tmp_path: Path) -> None:
    version = push_fixture(live_server, tmp_path, "file_tokens")
    created = create(live_server, version, {"count": 8})
    names = [urlsplit(url).path.rsplit("/", 1)[1] for url in sse.outputs(sse.read_all(created["urls"]["stream"]))]
    assert names == [f"file{i}.txt" for i in range(8)]
