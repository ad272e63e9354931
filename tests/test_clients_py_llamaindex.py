"""LlamaIndex (``llama-index-llms-replicate`` 0.7.0) against a live server through a reverse proxy (issue 18),
with ``replicate`` 1.0.7 underneath (the package does not depend on it: users install it, and get the newest
stable release). Installed by the test itself in a venv of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.client_venvs import client_env, client_venv, proxy_port
from tests.support.models import push
from tests.support.pushing import EXAMPLES, shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
LLAMAINDEX = ("llama-index-llms-replicate==0.7.0", "llama-index-core==0.14.25", "replicate==1.0.7")


def test_complete_stream_and_chat(live_server: LiveServer, proxied_url: str, tmp_path: Path) -> None:
    venv = client_venv(*LLAMAINDEX)
    versions = {"streaming": push(live_server, EXAMPLES / "streaming", "streaming")}
    out = venv.run("llamaindex_llm", json.dumps(versions), env=client_env(proxied_url, ADMIN_TOKEN, tmp_path))
    assert out["ports"] == [proxy_port(proxied_url)]  # every request went through the proxy

    assert out["complete"] == "twice over twice over"
    assert out["deltas"] == ["one", " two", " three", ""]  # the last: the done event (as on Replicate)
    assert out["chat"]["role"] == "assistant"
    assert "chat words" in out["chat"]["content"]

    listed = httpx.get(f"{live_server.url}/v1/predictions", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    first = listed.json()["results"][-1]  # oldest last: complete()'s
    # temperature and max_length (always sent) are not the model's inputs: dropped, as Cog and Replicate do
    assert (first["status"], first["input"]) == ("succeeded", {"prompt": "twice over", "repeat": 2})
