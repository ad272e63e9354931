"""A deployment's instances through the API, on a live server with real coglet and a fake GPU inventory:
its minimum started on create, placed on its hardware's GPUs (one GPU per instance, the 2x SKU on two),
visible at ``/instances``, scaled to zero once offline, and its first prediction from zero served."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cogport.settings import GpuSpec, Settings
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.models import push_fixture
from tests.support.openapi import validate
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
A100 = "NVIDIA A100-SXM4-80GB"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.gpus = [GpuSpec(name=A100), GpuSpec(name=A100)]
    settings.runtime.idle_timeout = 1.0
    return settings


def until(check: Callable[[], Any], within: float = 60.0) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("not within the time")


def instances(server: LiveServer, name: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/v1/deployments/admin/{name}/instances", headers=AUTH)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def deploy(server: LiveServer, name: str, version: str, hardware: str, minimum: int, maximum: int) -> None:
    body = {
        "name": name,
        "model": "admin/gpu-env",
        "version": version,
        "hardware": hardware,
        "min_instances": minimum,
        "max_instances": maximum,
    }
    response = httpx.post(f"{server.url}/v1/deployments", json=body, headers=AUTH)
    assert response.status_code == 200, response.text


def predict(server: LiveServer, name: str) -> dict[str, Any]:
    response = httpx.post(
        f"{server.url}/v1/deployments/admin/{name}/predictions",
        json={"input": {}},
        headers={**AUTH, "Prefer": "wait"},
        timeout=90,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_deployments_get_their_own_gpus_and_scale(live_server: LiveServer, tmp_path: Path) -> None:
    version = push_fixture(live_server, tmp_path, "gpu_env")
    assert {"gpu-a100-large", "gpu-a100-large-2x"} <= {
        s["sku"] for s in httpx.get(f"{live_server.url}/v1/hardware", headers=AUTH).json()
    }
    # Unknown hardware is refused at create.
    bad = {"name": "x", "model": "admin/gpu-env", "version": version, "hardware": "gpu-h100",
           "min_instances": 0, "max_instances": 1}  # fmt: skip
    assert httpx.post(f"{live_server.url}/v1/deployments", json=bad, headers=AUTH).status_code == 422

    deploy(live_server, "warm", version, "gpu-a100-large", 1, 1)
    [warm] = until(lambda: [i for i in instances(live_server, "warm")["results"] if i["state"] == "idle"])
    assert warm["hardware"] == "gpu-a100-large" and len(warm["gpus"]) == 1 and warm["node"]
    prediction = predict(live_server, "warm")
    assert prediction["status"] == "succeeded" and prediction["deployment"] == "admin/warm"
    assert prediction["output"] == str(warm["gpus"][0])  # it ran on the deployment's own GPU
    validate("/predictions", "post", 201, prediction)

    # A 2x deployment needs both GPUs: the warm one holds one and is kept (its minimum), so this waits...
    deploy(live_server, "pair", version, "gpu-a100-large-2x", 0, 1)
    pending = httpx.post(
        f"{live_server.url}/v1/deployments/admin/pair/predictions", json={"input": {}}, headers=AUTH
    ).json()
    time.sleep(1.5)
    assert httpx.get(pending["urls"]["get"], headers=AUTH).json()["status"] == "starting"
    assert instances(live_server, "pair")["queued"] == 1
    assert [i["id"] for i in instances(live_server, "warm")["results"]] == [warm["id"]]  # a minimum is never evicted
    # ...until the warm deployment goes offline and its instance idles out, freeing its GPU.
    update = httpx.patch(f"{live_server.url}/v1/deployments/admin/warm", json={"min_instances": 0}, headers=AUTH)
    assert update.status_code == 200 and update.json()["current_release"]["number"] == 2
    done = until(lambda: (b := httpx.get(pending["urls"]["get"], headers=AUTH).json())["status"] == "succeeded" and b)
    assert sorted(done["output"].split(",")) == ["0", "1"]
    # Offline and idle: the pair scales back to zero too, and a prediction from zero starts it again.
    until(lambda: instances(live_server, "pair")["results"] == [], within=30)
    again = predict(live_server, "pair")
    assert again["status"] == "succeeded" and sorted(again["output"].split(",")) == ["0", "1"]
    admin = httpx.get(f"{live_server.url}/admin/v1/instances", headers=AUTH).json()["results"]
    assert all(i["pool"].startswith("deployment:") or i["pool"] == "on-demand" for i in admin)
