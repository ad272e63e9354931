"""Streaming with both official clients against a live server: the streaming example (ConcatenateIterator).

``replicate.stream`` (Python 1.0.7) sends its bearer token; the JS client (npm ``replicate@1.4.0``) sends
none, so the stream URL must work as a capability. Text streams are served under ``/v1/streams/``, not
``/v1/files/`` (where the JS client would turn every output into a FileOutput).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support import npm, sse
from tests.support.models import push
from tests.support.pushing import EXAMPLES, shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PROMPT = "the quick brown fox jumps over the lazy dog"
TOKENS = ["the"] + [" " + word for word in PROMPT.split()[1:]]


@pytest.fixture
def streaming(live_server: LiveServer) -> str:
    return push(live_server, EXAMPLES / "streaming", "streaming")


def test_python_client_stream(replicate_env: Any, live_server: LiveServer, streaming: str) -> None:
    replicate = replicate_env
    events = list(replicate.stream(f"admin/streaming:{streaming}", input={"prompt": PROMPT, "delay": 0.01}))
    assert [e.event.value for e in events] == ["output"] * len(TOKENS) + ["done"]
    assert [str(e) for e in events[:-1]] == TOKENS
    assert "".join(str(e) for e in events) == PROMPT
    assert all(e.id for e in events)
    assert events[-1].data == "{}"

    by_model = replicate.stream("admin/streaming", input={"prompt": "by model", "repeat": 2})
    assert "".join(str(e) for e in by_model) == "by model by model"


def test_python_client_async_stream(replicate_env: Any, streaming: str) -> None:
    replicate = replicate_env

    async def collect() -> list[Any]:
        stream = await replicate.async_stream(f"admin/streaming:{streaming}", input={"prompt": PROMPT})
        return [e async for e in stream]

    events = asyncio.run(collect())
    assert "".join(str(e) for e in events) == PROMPT


def test_stream_url_is_a_capability_outside_files(live_server: LiveServer, streaming: str) -> None:
    created = httpx.post(
        f"{live_server.url}/v1/predictions",
        json={"version": streaming, "input": {"prompt": PROMPT}},
        headers=AUTH,
    ).json()
    stream_url = created["urls"]["stream"]
    path = urlsplit(stream_url).path
    assert path.startswith("/v1/streams/") and not path.startswith("/v1/files/")
    assert stream_url.startswith(live_server.url)
    events = sse.read_all(stream_url)  # no Authorization header
    assert "".join(sse.outputs(events)) == PROMPT
    assert events[-1].event == "done" and json.loads(events[-1].data) == {}
    # An unknown token is a 404, not an empty stream.
    missing = httpx.get(f"{live_server.url}/v1/streams/nope{path[-8:]}", headers={"Accept": "text/event-stream"})
    assert missing.status_code == 404


JS_STREAM = r"""
const Replicate = require("replicate");
const [baseUrl, auth, ref, prompt] = process.argv.slice(2);
const seen = [];
const realFetch = globalThis.fetch;
const replicate = new Replicate({
  auth,
  baseUrl,
  fetch: (url, init = {}) => {
    const headers = new Headers(init.headers || {});
    seen.push({ url: String(url), authorization: headers.get("authorization") });
    return realFetch(url, init);
  },
});
(async () => {
  const events = [];
  for await (const event of replicate.stream(ref, { input: { prompt } })) {
    events.push({ event: event.event, id: event.id, data: event.data, text: event.toString() });
  }
  console.log(JSON.stringify({ events, seen }));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_js_client_stream(live_server: LiveServer, streaming: str) -> None:
    cache = npm.installed("replicate@1.4.0")
    script = cache / "stream_test.js"
    script.write_text(JS_STREAM)
    result = subprocess.run(
        ["node", str(script), f"{live_server.url}/v1", ADMIN_TOKEN, f"admin/streaming:{streaming}", PROMPT],
        cwd=cache,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    events = out["events"]
    assert [e["event"] for e in events] == ["output"] * len(TOKENS) + ["done"]
    assert [e["text"] for e in events[:-1]] == TOKENS  # strings, not FileOutput objects
    assert all(e["id"] for e in events)
    stream_requests = [s for s in out["seen"] if "/v1/streams/" in s["url"]]
    assert len(stream_requests) == 1
    assert stream_requests[0]["authorization"] is None  # the JS client sends no token to the stream URL
