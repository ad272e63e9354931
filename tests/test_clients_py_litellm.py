"""LiteLLM (1.110.2) cannot be pointed at cogport: its Replicate provider ignores every base URL (issue 18).

``litellm.completion(model="replicate/...", api_base=...)`` resolves ``api_base`` (the argument, then
``litellm.api_base``, then ``REPLICATE_API_BASE``) and passes it on, but ``ReplicateConfig.get_complete_url``
(litellm/llms/replicate/chat/transformation.py) overwrites it with ``https://api.replicate.com/v1/models/...``.
This test pins that limitation down rather than skipping it: with the server behind the proxy and every base
option given, the client's HTTPS proxy (a recorder here that refuses everything, so nothing reaches Replicate)
sees only ``CONNECT api.replicate.com:443``, and the server sees no request. docs/clients.md says so.
When a LiteLLM release honours ``api_base``, this test fails and should become a real one.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.client_venvs import client_env, client_venv

LITELLM = ("litellm==1.110.2",)
REFUSED = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
VERSION = "0" * 64


@contextmanager
def refusing_https_proxy() -> Iterator[tuple[int, list[str]]]:
    """An HTTP proxy on 127.0.0.1 that records each request line (``CONNECT host:443``) and refuses it."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[str] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                head = b""
                while b"\r\n\r\n" not in head and (chunk := conn.recv(4096)):
                    head += chunk
                seen.append(head.split(b"\r\n", 1)[0].decode())
                conn.sendall(REFUSED)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], seen
    finally:
        listener.close()
        thread.join(timeout=5)


def test_litellm_ignores_every_base_url(live_server: LiveServer, proxied_url: str, tmp_path: Path) -> None:
    venv = client_venv(*LITELLM)
    with refusing_https_proxy() as (port, seen):
        env = client_env(
            proxied_url,
            ADMIN_TOKEN,
            tmp_path,
            HTTPS_PROXY=f"http://127.0.0.1:{port}",
            LITELLM_LOCAL_MODEL_COST_MAP="True",
        )
        out = venv.run("litellm_completion", f"{proxied_url}/v1", VERSION, env=env)

    expected = "https://api.replicate.com/v1/models/admin/streaming/predictions"
    for key in ("argument", "argument_stream", "environment", "module"):
        assert out[key] == {"error": "APIError", "urls": [expected]}, (key, out[key])
    # A pinned version is posted to /v1/models/<version id>/predictions: not a route on Replicate either.
    assert out["pinned"] == {
        "error": "APIError",
        "urls": [f"https://api.replicate.com/v1/models/{VERSION}/predictions"],
    }
    assert out["ports"] == [port]  # it never connected to the proxy in front of cogport
    assert "CONNECT api.replicate.com:443 HTTP/1.1" in seen
    # the other: a chat template looked up on huggingface.co for a model name LiteLLM does not know
    assert set(seen) <= {"CONNECT api.replicate.com:443 HTTP/1.1", "CONNECT huggingface.co:443 HTTP/1.1"}, seen
    listed = httpx.get(f"{live_server.url}/v1/predictions", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert listed.json()["results"] == []
