"""Predictions end to end: a real server, a real build, real coglet processes, the official client."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.models import push
from tests.support.openapi import validate
from tests.support.pushing import EXAMPLES, shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def hello(live_server: LiveServer) -> str:
    return push(live_server, EXAMPLES / "hello-world", "hello-world")


def test_run_sync_async_and_by_model(replicate_env: Any, live_server: LiveServer, hello: str) -> None:
    replicate = replicate_env
    assert replicate.run(f"admin/hello-world:{hello}", input={"text": "world"}) == "hello world"
    assert replicate.run("admin/hello-world", input={"text": "model"}) == "hello model"
    assert replicate.run(f"admin/hello-world:{hello}", input={"text": "poll"}, wait=False) == "hello poll"
    assert asyncio.run(replicate.async_run(f"admin/hello-world:{hello}", input={"text": "async"})) == "hello async"


def test_create_get_list_and_wait(replicate_env: Any, live_server: LiveServer, hello: str) -> None:
    replicate = replicate_env
    prediction = replicate.predictions.create(version=hello, input={"text": "a"})
    assert prediction.status == "starting"
    assert prediction.urls["get"].startswith(live_server.url)
    prediction.wait()
    assert prediction.status == "succeeded"
    assert prediction.output == "hello a"
    assert prediction.metrics["predict_time"] >= 0
    assert prediction.metrics["total_time"] >= prediction.metrics["predict_time"]
    again = replicate.predictions.get(prediction.id)
    assert again.output == "hello a" and again.completed_at and again.started_at

    by_model = replicate.models.predictions.create(model="admin/hello-world", input={"text": "b"})
    by_model.wait()
    assert by_model.output == "hello b"
    assert by_model.version == hello

    page = replicate.predictions.list()
    assert [p.id for p in page.results][:2] == [by_model.id, prediction.id]

    body = httpx.get(f"{live_server.url}/v1/predictions/{prediction.id}", headers=AUTH)
    assert body.headers["cache-control"] == "no-store"
    validate("/predictions/{prediction_id}", "get", 200, body.json())
    listing = httpx.get(f"{live_server.url}/v1/predictions", headers=AUTH)
    validate("/predictions", "get", 200, listing.json())


def test_sync_mode_headers_and_wire(live_server: LiveServer, hello: str) -> None:
    response = httpx.post(
        f"{live_server.url}/v1/predictions",
        json={"version": f"admin/hello-world:{hello}", "input": {"text": "sync"}},
        headers={**AUTH, "Prefer": "wait=30"},
        timeout=40,
    )
    assert response.status_code == 201, response.text
    assert response.headers["preference-applied"] == "wait=30"
    body = response.json()
    validate("/predictions", "post", 201, body)
    assert body["status"] == "succeeded" and body["output"] == "hello sync"
    assert response.headers["location"] == body["urls"]["get"]


def test_validation_and_version_errors(replicate_env: Any, live_server: LiveServer, hello: str) -> None:
    replicate = replicate_env
    with pytest.raises(replicate.exceptions.ReplicateError) as info:
        replicate.predictions.create(version=hello, input={})
    assert info.value.status == 422
    assert "text is required" in info.value.detail

    response = httpx.post(
        f"{live_server.url}/v1/predictions", json={"version": "0" * 64, "input": {"text": "x"}}, headers=AUTH
    )
    assert response.status_code == 422
    assert response.json()["title"] == "Invalid version or not permitted"

    response = httpx.post(
        f"{live_server.url}/v1/predictions",
        json={"version": hello, "input": {"text": "x"}, "model": "admin/hello-world"},
        headers=AUTH,
    )
    assert response.status_code == 422
    assert response.json()["invalid_fields"][0]["type"] == "additional_property_not_allowed"


def test_private_versions_are_invalid_for_others(live_server: LiveServer, hello: str) -> None:
    created = httpx.post(f"{live_server.url}/admin/v1/accounts", json={"username": "eve"}, headers=AUTH)
    assert created.status_code == 201
    token = httpx.post(f"{live_server.url}/admin/v1/accounts/eve/tokens", json={}, headers=AUTH).json()["token"]
    eve = {"Authorization": f"Bearer {token}"}
    response = httpx.post(
        f"{live_server.url}/v1/predictions", json={"version": hello, "input": {"text": "x"}}, headers=eve
    )
    assert response.status_code == 422
    mine = httpx.post(
        f"{live_server.url}/v1/predictions", json={"version": hello, "input": {"text": "x"}}, headers=AUTH
    ).json()
    assert httpx.get(f"{live_server.url}/v1/predictions/{mine['id']}", headers=eve).status_code == 404
    assert httpx.post(f"{live_server.url}/v1/predictions/{mine['id']}/cancel", headers=eve).status_code == 404
