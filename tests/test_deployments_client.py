"""Deployments through the official clients (replicate-python 1.0.7, npm replicate 1.4.0) against a live
server, with predictions run by real coglet instances of the hello-world example."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.models import push
from tests.support.openapi import validate
from tests.support.pushing import EXAMPLES, shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.test_files_js import _installed

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def hello(live_server: LiveServer) -> str:
    live_server.settings.deployments.offline_before_delete = 0
    return push(live_server, EXAMPLES / "hello-world", "hello-world")


def test_python_client(replicate_env: Any, live_server: LiveServer, hello: str) -> None:
    replicate = replicate_env
    created = replicate.deployments.create(
        name="admin/greeter", model="admin/hello-world", version=hello, hardware="cpu", min_instances=0,
        max_instances=2,
    )  # fmt: skip
    assert (created.owner, created.name) == ("admin", "greeter")
    assert created.current_release.number == 1 and created.current_release.version == hello
    assert created.current_release.created_by.username == "admin"
    assert created.current_release.configuration.max_instances == 2

    got = replicate.deployments.get("admin/greeter")
    assert got.current_release.model == "admin/hello-world"
    assert [d.name for d in replicate.deployments.list().results] == ["greeter"]
    updated = replicate.deployments.update("admin", "greeter", max_instances=3, min_instances=1)
    assert updated.current_release.number == 2
    assert updated.current_release.configuration.min_instances == 1

    prediction = got.predictions.create(input={"text": "deployed"}, wait=True)
    assert prediction.status == "succeeded" and prediction.output == "hello deployed"
    body = httpx.get(f"{live_server.url}/v1/predictions/{prediction.id}", headers=AUTH).json()
    assert body["deployment"] == "admin/greeter" and body["version"] == hello
    validate("/predictions/{prediction_id}", "get", 200, body)

    queued = replicate.deployments.predictions.create("admin/greeter", input={"text": "later"})
    queued.wait()
    assert queued.output == "hello later"
    by_kw = replicate.predictions.create(deployment="admin/greeter", input={"text": "kw"})
    by_kw.wait()
    assert by_kw.output == "hello kw"

    with pytest.raises(replicate.exceptions.ReplicateError) as info:
        replicate.deployments.delete("admin", "greeter")  # min_instances is 1
    assert info.value.status == 409
    replicate.deployments.update("admin", "greeter", min_instances=0)
    assert replicate.deployments.delete("admin", "greeter") is True
    assert replicate.deployments.list().results == []


def test_deployment_prediction_wire(live_server: LiveServer, hello: str) -> None:
    base = f"{live_server.url}/v1/deployments"
    config = {"model": "admin/hello-world", "version": hello, "hardware": "cpu", "min_instances": 0, "max_instances": 1}
    assert httpx.post(base, json={"name": "wire", **config}, headers=AUTH).status_code == 200
    sync = httpx.post(
        f"{base}/admin/wire/predictions",
        json={"input": {"text": "sync"}},
        headers={**AUTH, "Prefer": "wait=30", "Cancel-After": "60s"},
        timeout=40,
    )
    assert sync.status_code == 201, sync.text
    assert sync.headers["preference-applied"] == "wait=30"
    validate("/deployments/{deployment_owner}/{deployment_name}/predictions", "post", 201, sync.json())
    assert sync.json()["deployment"] == "admin/wire" and sync.json()["output"] == "hello sync"
    bad = httpx.post(f"{base}/admin/wire/predictions", json={"input": {}}, headers=AUTH)
    assert bad.status_code == 422


JS = r"""
const Replicate = require("replicate");
const [baseUrl, auth, version] = process.argv.slice(2);
const replicate = new Replicate({ auth, baseUrl });
(async () => {
  const config = { model: "admin/hello-world", version, hardware: "cpu", min_instances: 0, max_instances: 1 };
  const created = await replicate.deployments.create({ name: "js", ...config });
  const got = await replicate.deployments.get("admin", "js");
  const listed = await replicate.deployments.list();
  const updated = await replicate.deployments.update("admin", "js", { max_instances: 2 });
  const prediction = await replicate.deployments.predictions.create("admin", "js", {
    input: { text: "js" }, wait: 30,
  });
  const deleted = await replicate.deployments.delete("admin", "js");
  let gone = null;
  try { await replicate.deployments.get("admin", "js"); } catch (e) { gone = e.response.status; }
  console.log(JSON.stringify({ created, got, listed, updated, prediction, deleted, gone }));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_js_client(live_server: LiveServer, hello: str) -> None:
    cache = _installed()
    script = cache / "deployments_test.js"
    script.write_text(JS)
    result = subprocess.run(
        ["node", str(script), f"{live_server.url}/v1", ADMIN_TOKEN, hello],
        cwd=cache,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["created"]["current_release"]["number"] == 1
    assert out["got"] == out["created"]
    assert [d["name"] for d in out["listed"]["results"]] == ["js"]
    assert out["updated"]["current_release"]["number"] == 2
    assert out["prediction"]["status"] == "succeeded" and out["prediction"]["output"] == "hello js"
    assert out["prediction"]["deployment"] == "admin/js"
    assert out["deleted"] is True and out["gone"] == 404
