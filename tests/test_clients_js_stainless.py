"""npm ``replicate-stainless@0.9.0``, Replicate's Stainless-generated TypeScript SDK (issue 18's
"replicate-stainless"), against a live server behind a reverse proxy, configured through the environment as its
README says (``REPLICATE_BASE_URL``, ``REPLICATE_API_TOKEN``).

tests/clients_js/stainless.js drives ``run`` (blocking and polling), ``predictions.create`` then ``wait``, a
Buffer file input, the predictions list's auto-pagination, ``files.create`` + ``trainings.create`` + the trained
version, deployments, and a 404. The SDK has no ``stream`` method (docs/clients.md); it returns output URLs as
strings unless they are ``https:``/``data:`` (``useFileOutput``), as npm ``replicate`` does.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support import npm
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.test_clients_js_replicate import BY_MODEL, BY_VERSION, client_models  # noqa: F401 - fixture
from tests.test_files_e2e import png, png_size
from tests.test_trainings_client import TOPICS

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
PACKAGE = "replicate-stainless@0.9.0"


def test_stainless_sdk(
    live_server: LiveServer,
    proxied_url: str,
    client_models: dict[str, str],  # noqa: F811 - the fixture
) -> None:
    versions = client_models
    cache = npm.installed(PACKAGE)
    config = {
        "hello": versions["hello-world"],
        "streaming": versions["streaming"],
        "image": versions["image"],
        "trainable": versions["trainable"],
        "png": base64.b64encode(png(6, 4)).decode(),
        "csv": TOPICS,
    }
    env = {"REPLICATE_BASE_URL": f"{proxied_url}/v1", "REPLICATE_API_TOKEN": ADMIN_TOKEN}
    out: dict[str, Any] = npm.run_script(cache, "stainless.js", json.dumps(config), env=env, timeout=240)

    assert out["baseURL"] == f"{proxied_url}/v1"
    # Everything through the proxy (the SDK probes its fetch once with a ``data:,`` URL: no network).
    network = [r for r in out["requests"] if not r["url"].startswith("data:")]
    assert {urlsplit(r["url"]).netloc for r in network} == {urlsplit(proxied_url).netloc}

    assert out["runBlock"] == "hello block" and out["runPoll"] == "hello poll"
    creates = [r for r in out["requests"] if r["method"] == "POST" and r["url"].endswith("/predictions")]
    assert [urlsplit(r["url"]).path for r in creates[:2]] == [BY_VERSION, BY_MODEL]
    assert [r["prefer"] for r in creates[:3]] == ["wait", None, None]

    assert out["waited"]["status"] == "succeeded" and out["waited"]["output"] == "hello queued"
    assert out["waited"]["urls"]["get"] == f"{proxied_url}/v1/predictions/{out['waited']['id']}"
    assert out["got"]["output"] == "hello queued"

    # The Buffer went up through POST /v1/files (not a data: URL); plain http output: the URL string.
    assert any(r["method"] == "POST" and urlsplit(r["url"]).path == "/v1/files" for r in out["requests"])
    assert out["fileOutput"]["type"] == "string"
    assert out["fileOutput"]["url"].startswith(f"{proxied_url}/v1/files/")
    assert png_size(base64.b64decode(out["fileOutput"]["bytes"])) == (2, 1)

    # No stream method in this SDK; the stream URL is there for callers who read SSE themselves.
    assert out["hasStream"] is False
    assert out["streamingPrediction"]["urls"]["stream"].startswith(f"{proxied_url}/v1/streams/")
    assert out["streamingPrediction"]["output"] == ["a", " b"]

    assert out["waited"]["id"] in out["predictions"] and len(out["predictions"]) == 5

    assert out["training"]["status"] == "succeeded", out["training"]["error"]
    assert out["training"]["output"]["version"].startswith("admin/topics:")
    assert out["trained"]["label"] == "sports"

    assert out["deploymentCreated"]["current_release"]["version"] == versions["hello-world"]
    assert out["deployed"] == {"status": "succeeded", "output": "hello deployed", "deployment": "admin/stainless"}

    assert out["notFound"] == {"name": "NotFoundError", "status": 404}
