"""LangChain (``langchain-community`` 0.4.2, ``langchain_community.llms.Replicate``) against a live server
through a reverse proxy (issue 18), with ``replicate`` 1.0.7 underneath (the newest stable release, what
``pip install replicate`` gives). Installed by the test itself in a venv of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support import predictions
from tests.support.client_venvs import client_env, client_venv, proxy_port
from tests.support.models import push, push_fixture
from tests.support.pushing import EXAMPLES, shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
LANGCHAIN = ("langchain-community==0.4.2", "langchain-core==1.8.3", "replicate==1.0.7")


def test_invoke_and_stream(live_server: LiveServer, proxied_url: str, tmp_path: Path) -> None:
    venv = client_venv(*LANGCHAIN)
    versions = {
        "hello": push(live_server, EXAMPLES / "hello-world", "hello-world"),
        "streaming": push(live_server, EXAMPLES / "streaming", "streaming"),
        "tokens": push_fixture(live_server, tmp_path, "tokens"),
    }
    gate = tmp_path / "never"  # the tokens model waits for it after its first token
    env = client_env(proxied_url, ADMIN_TOKEN, tmp_path)
    out = venv.run("langchain_llm", json.dumps(versions), str(gate), env=env)
    assert out["ports"] == [proxy_port(proxied_url)]  # every request went through the proxy

    assert out["invoke_pinned"] == "pinned words pinned words"
    assert out["invoke_by_model"] == "by model"
    assert out["stream"] == ["one", " two", " three", " four"]
    assert out["stop"] == "one two"
    assert out["hello"] == "hello langchain"
    assert out["stream_stop"] == "alpha beta "

    listed = httpx.get(f"{live_server.url}/v1/predictions", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    last = listed.json()["results"][0]  # newest first: the stream that was stopped
    assert last["input"]["first"] == "alpha beta STOP gamma"
    ended = predictions.wait_for(live_server, last["id"], {"succeeded", "failed", "canceled"})
    assert (ended["status"], ended["output"]) == ("canceled", ["alpha beta STOP gamma"])  # cancelled through the proxy
