"""replicate 1.1 (PyPI, the newest 1.1: 1.1.0b3) against a live server through a reverse proxy (issue 18).

Installed by the test itself in a venv of its own (tests/support/client_venvs.py) and run as users run it:
``REPLICATE_BASE_URL`` is the proxy's URL (``http://localhost:<port>``, a name and port the server does not
listen on), so every URL cogport answers with (``urls.get``, stream and file URLs) must bring the client back
through the proxy. What 1.0.7 already covers directly (tests/test_predictions_client.py and friends) is not
repeated; this is 1.1's ``use()`` and the paths where the proxy matters.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.client_venvs import client_env, client_venv, proxy_port
from tests.support.models import push, push_fixture
from tests.support.pushing import EXAMPLES, create_model, shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.test_files_e2e import png, png_size
from tests.test_trainings_client import TOPICS

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
REPLICATE = "replicate==1.1.0b3"


def digest(body: bytes, suffix: str) -> str:
    return f"{len(body)} {hashlib.sha256(body).hexdigest()} {suffix}"


def test_use_functions_files_and_streams(live_server: LiveServer, proxied_url: str, tmp_path: Path) -> None:
    venv = client_venv(REPLICATE)
    versions = {
        "hello": push(live_server, EXAMPLES / "hello-world", "hello-world"),
        "streaming": push(live_server, EXAMPLES / "streaming", "streaming"),
        "image": push(live_server, EXAMPLES / "image", "image"),
    }
    for name in ("file_list", "file_tokens", "file_digest", "tokens"):
        versions[name] = push_fixture(live_server, tmp_path, name)
    work = tmp_path / "client"
    work.mkdir()
    env = client_env(proxied_url, ADMIN_TOKEN, work)
    out = venv.run("replicate_use", json.dumps(versions), str(work), png(3, 2).hex(), env=env)
    assert out["ports"] == [proxy_port(proxied_url)]  # every request went through the proxy

    assert out["hello"] == "hello world"
    assert out["hello_pinned"] == "hello pinned"
    assert out["run"]["output"] == "hello later"
    assert out["tokens"] == ["one", " two", " three"]  # streaming=True: the tokens as they come
    assert out["concatenated"] == "said twice said twice"  # a ConcatenateIterator without streaming: one string
    assert out["async_hello"] == "hello async"
    assert out["async_tokens"] == ["async", " tokens", " here"]

    for key in ("file_list", "file_tokens"):
        outputs = out[key]
        assert [f["type"] for f in outputs] == ["URLPath", "URLPath"]
        assert [f["text"] for f in outputs] == ["file 0", "file 1"]  # fetched without a token, through the proxy
        assert all(f["url"].startswith(f"{proxied_url}/") for f in outputs), outputs
    assert out["digest_local"] == digest(b"uploaded by use()", ".txt")
    assert out["chained_is_urlpath"] is True
    assert out["digest_chained"] == digest(b"file 1", ".txt")
    assert out["image"]["type"] == "URLPath" and png_size(bytes.fromhex(out["image"]["data"])) == (3, 2)
    assert out["image"]["url"].startswith(f"{proxied_url}/")

    assert out["failure"]["status"] == "failed"  # a ModelError, carrying the prediction
    assert "RuntimeError: the model gave up" in out["failure"]["error"]
    assert "line 0" in out["failure_logs"] and "line 1" in out["failure_logs"]


def test_resources_through_the_proxy(live_server: LiveServer, proxied_url: str, tmp_path: Path) -> None:
    venv = client_venv(REPLICATE)
    live_server.settings.deployments.offline_before_delete = 0
    versions = {
        "hello": push(live_server, EXAMPLES / "hello-world", "hello-world"),
        "streaming": push(live_server, EXAMPLES / "streaming", "streaming"),
        "trainable": push(live_server, EXAMPLES / "trainable", "trainable"),
    }
    create_model(live_server.url, ADMIN_TOKEN, "admin", "topics")
    public = [f"public-{i:02d}" for i in range(30)]  # over a page of models (25): paginate follows next
    for name in public:
        create_model(live_server.url, ADMIN_TOKEN, "admin", name, visibility="public")
    for name in ("file_list", "file_digest"):
        versions[name] = push_fixture(live_server, tmp_path, name)
    work = tmp_path / "client"
    work.mkdir()
    env = client_env(proxied_url, ADMIN_TOKEN, work)
    out = venv.run("replicate_api", json.dumps(versions), str(work), TOPICS, env=env)
    assert out["ports"] == [proxy_port(proxied_url)]  # every request went through the proxy

    # FileOutput wraps only https: and data: URLs (replicate/helpers.py transform_output): over http, strings
    assert [(f["type"], f["text"]) for f in out["run_files"]] == [("str", "file 0"), ("str", "file 1")]
    assert all(f["url"].startswith(f"{proxied_url}/") for f in out["run_files"])
    assert out["queued_status"] == "starting"
    assert all(url.startswith(f"{proxied_url}/") for url in out["queued_urls"].values()), out["queued_urls"]
    queued = out["queued"]
    assert (queued["status"], queued["error"]) == ("succeeded", None)
    assert queued["output"] == digest(bytes(range(256)) * 8, ".bin")
    assert queued["input"]["file"].startswith(f"{proxied_url}/v1/files/")  # the client's upload, by the proxy's name
    assert out["stream"] == {"events": ["output"] * 4 + ["done"], "text": "streamed through a proxy"}

    training = out["training"]
    assert training["status"] == "succeeded", training["error"]
    assert training["output"]["version"].startswith("admin/topics:")
    assert training["output"]["weights"].startswith(f"{proxied_url}/")
    assert out["trained_answer"]["label"] == "cooking"  # the trained labels, not the base's sentiment

    assert all(url.startswith(f"{proxied_url}/") for url in out["deployment_urls"].values())
    assert out["deployment"] == {"status": "succeeded", "output": "hello deployed"}
    assert out["models"] == public[::-1]  # GET /v1/models: public models, newest first, over two pages
    assert out["search"] == ["public-07"]
