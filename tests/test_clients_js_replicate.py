"""npm ``replicate@1.4.0`` through a reverse proxy (issue 18): the client is given ``http://localhost:<proxy
port>/v1`` (its ``baseUrl`` option), a name and port the server never listens on, so every URL cogport answers
with must bring it back through the proxy.

One node run (tests/clients_js/replicate.js) drives ``run`` (``Prefer: wait``), ``predictions.create`` then
``wait``, a Buffer/Blob file input in a waited and in a queued prediction (uploaded through the Files API and
passed by URL: a queued prediction's own files behind a proxy once failed), a file output, ``stream``,
``trainings.create`` then the trained version, and a deployment's prediction.

The client wraps only ``https:`` and ``data:`` outputs in ``FileOutput`` (``index.js`` ``run``); behind a plain
``http`` proxy it returns the URL string, which is asserted here (docs/clients.md). ``FileOutput`` over HTTPS
is covered by tests/test_files_e2e.py.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support import npm
from tests.support.models import push
from tests.support.pushing import EXAMPLES, create_model, shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.test_files_e2e import png, png_size
from tests.test_trainings_client import TOPICS

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PACKAGE = "replicate@1.4.0"
BY_VERSION, BY_MODEL = "/v1/predictions", "/v1/models/admin/hello-world/predictions"


@pytest.fixture
def client_models(live_server: LiveServer) -> dict[str, str]:
    live_server.settings.deployments.offline_before_delete = 0
    pushed = {name: push(live_server, EXAMPLES / name, name) for name in ("hello-world", "streaming", "image")}
    pushed["trainable"] = push(live_server, EXAMPLES / "trainable", "trainable")
    create_model(live_server.url, ADMIN_TOKEN, "admin", "topics")
    return pushed


def test_replicate_js_behind_a_proxy(live_server: LiveServer, proxied_url: str, client_models: dict[str, str]) -> None:
    versions = client_models
    cache = npm.installed(PACKAGE)
    image = png(6, 4)
    config = {
        "baseUrl": f"{proxied_url}/v1",
        "auth": ADMIN_TOKEN,
        "hello": versions["hello-world"],
        "streaming": versions["streaming"],
        "image": versions["image"],
        "trainable": versions["trainable"],
        "png": base64.b64encode(image).decode(),
        "csv": TOPICS,
    }
    out: dict[str, Any] = npm.run_script(cache, "replicate.js", json.dumps(config), timeout=240)

    # Every request went through the proxy, none to the server's own address or to api.replicate.com.
    assert {urlsplit(r["url"]).netloc for r in out["requests"]} == {urlsplit(proxied_url).netloc}

    # run: Prefer: wait on the create, by version (POST /v1/predictions) and by model name.
    assert out["runByVersion"] == "hello run" and out["runByModel"] == "hello by model"
    creates = [r for r in out["requests"] if r["method"] == "POST" and r["url"].endswith("/predictions")]
    assert [urlsplit(r["url"]).path for r in creates[:2]] == [BY_VERSION, BY_MODEL]
    assert [r["prefer"] for r in creates[:2]] == ["wait", "wait"]

    # predictions.create without wait, then wait(): polled through the proxy's URLs.
    assert creates[2]["prefer"] is None
    assert out["queuedStatus"] in ("starting", "processing", "succeeded")
    assert out["waited"]["status"] == "succeeded" and out["waited"]["output"] == "hello queued"
    assert out["waited"]["urls"]["get"] == f"{proxied_url}/v1/predictions/{out['waited']['id']}"
    assert out["got"]["output"] == "hello queued"

    # A Buffer input: uploaded (POST /v1/files), passed by its proxy URL; the PNG output comes back as the URL
    # string (plain http: no FileOutput), readable with no token.
    file_output = out["fileOutput"]
    assert file_output["type"] == "string" and not file_output["isFileOutput"]
    assert file_output["url"].startswith(f"{proxied_url}/v1/files/")
    assert png_size(base64.b64decode(file_output["bytes"])) == (2, 1)
    uploads = [r for r in out["requests"] if r["method"] == "POST" and urlsplit(r["url"]).path == "/v1/files"]
    assert len(uploads) == 3  # the Buffer, the Blob, the CSV

    # The same for a queued prediction with a Blob input: the server fetched its own file by the proxy's name.
    queued_file = out["queuedFile"]
    assert queued_file["status"] == "succeeded", queued_file["error"]
    assert queued_file["input"]["image"].startswith(f"{proxied_url}/v1/files/")
    assert png_size(base64.b64decode(queued_file["bytes"])) == (6, 4)

    # stream: output events, then done; the text is the prompt.
    events = out["events"]
    assert [e["event"] for e in events][-1] == "done"
    assert "".join(e["data"] for e in events if e["event"] == "output") == "streamed through a proxy"
    assert any(urlsplit(r["url"]).path.startswith("/v1/streams/") for r in out["requests"])

    # trainings.create on the uploaded CSV; the trained version (owner/name:id) learned the new labels.
    assert out["trainingCreated"]["urls"]["get"].startswith(f"{proxied_url}/v1/trainings/")
    assert out["training"]["status"] == "succeeded", out["training"]["error"]
    assert out["training"]["output"]["version"].startswith("admin/topics:")
    assert out["trained"]["label"] == "sports"

    # A deployment's queued prediction, waited on.
    assert out["deployed"] == {"status": "succeeded", "output": "hello deployed", "deployment": "admin/through-proxy"}
    assert out["deploymentDeleted"] is True
    assert httpx.get(f"{live_server.url}/v1/deployments/admin/through-proxy", headers=AUTH).status_code == 404
