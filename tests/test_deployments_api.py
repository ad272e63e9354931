"""Deployments over HTTP (in-process): create/get/list/update/delete, releases, 422s, who sees what, delete rules."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI

from cogport.db.engine import Database
from cogport.ops import accounts
from cogport.ops import deployments as deployment_ops
from cogport.ops.principals import Principal
from cogport.settings import HardwareSku, Settings
from tests.support.accounts import Users
from tests.support.openapi import validate
from tests.support.registry import add_version, auth, create_model

ONE = "/deployments/{deployment_owner}/{deployment_name}"


def _body(model: str, version: str, name: str = "dep", **overrides: Any) -> dict[str, Any]:
    return {"name": name, "model": model, "version": version, "hardware": "cpu", "min_instances": 0,
            "max_instances": 1, **overrides}  # fmt: skip


async def _create(client: httpx.AsyncClient, token: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post("/v1/deployments", json=body, headers=auth(token))
    assert response.status_code == 200, response.text
    validate("/deployments", "post", 200, response.json())
    created: dict[str, Any] = response.json()
    return created


async def _model_with_versions(
    client: httpx.AsyncClient, database: Database, token: str, ref: str, n: int = 2, visibility: str = "private"
) -> list[str]:
    await create_model(client, token, ref, visibility=visibility)
    return [await add_version(database, ref) for _ in range(n)]


async def test_create_get_list_update(client: httpx.AsyncClient, database: Database, users: Users) -> None:
    v1, v2 = await _model_with_versions(client, database, users.alice, "alice/m")
    created = await _create(client, users.alice, _body("alice/m", v1))
    assert created["owner"] == "alice" and created["name"] == "dep"
    release = created["current_release"]
    assert release["number"] == 1 and release["model"] == "alice/m" and release["version"] == v1
    assert release["created_by"] == {"type": "user", "username": "alice", "name": "alice"}
    assert release["configuration"] == {"hardware": "cpu", "min_instances": 0, "max_instances": 1}

    got = await client.get("/v1/deployments/alice/dep", headers=auth(users.alice))
    assert got.status_code == 200 and got.json() == created
    validate(ONE, "get", 200, got.json())

    patched = await client.patch("/v1/deployments/alice/dep", json={"max_instances": 3}, headers=auth(users.alice))
    assert patched.status_code == 200, patched.text
    validate(ONE, "patch", 200, patched.json())
    assert patched.json()["current_release"]["number"] == 2
    assert patched.json()["current_release"]["configuration"]["max_instances"] == 3
    assert patched.json()["current_release"]["version"] == v1
    patched = await client.patch("/v1/deployments/alice/dep", json={"version": v2}, headers=auth(users.alice))
    third = patched.json()["current_release"]
    assert third["number"] == 3 and third["version"] == v2 and third["configuration"]["max_instances"] == 3
    assert third["created_at"] >= release["created_at"]

    await _create(client, users.alice, _body("alice/m", v1, name="second"))
    listing = await client.get("/v1/deployments", headers=auth(users.alice))
    assert listing.status_code == 200
    validate("/deployments", "get", 200, listing.json())
    assert [d["name"] for d in listing.json()["results"]] == ["second", "dep"]


async def test_list_pages_follow_absolute_next(client: httpx.AsyncClient, database: Database, users: Users) -> None:
    (v1,) = await _model_with_versions(client, database, users.alice, "alice/m", 1)
    for i in range(27):
        await _create(client, users.alice, _body("alice/m", v1, name=f"d{i:02d}"))
    names: list[str] = []
    url: str | None = "/v1/deployments"
    while url:
        page = (await client.get(url, headers=auth(users.alice))).json()
        names += [d["name"] for d in page["results"]]
        url = page["next"]
        assert url is None or url.startswith("http://testserver/v1/deployments?cursor=")
    assert names == [f"d{i:02d}" for i in reversed(range(27))]


async def test_invalid_bodies(client: httpx.AsyncClient, database: Database, users: Users) -> None:
    (v1,) = await _model_with_versions(client, database, users.alice, "alice/m", 1)
    (other,) = await _model_with_versions(client, database, users.alice, "alice/other", 1)
    cases = [
        _body("alice/m", v1, hardware="gpu-nonexistent"),
        _body("alice/m", v1, min_instances=2, max_instances=1),
        _body("alice/m", v1, min_instances=6, max_instances=20),
        _body("alice/m", v1, max_instances=21),
        _body("alice/m", other),  # a version of another model
        _body("alice/m", "0" * 64),
        _body("bob/nothing", v1),
        {k: v for k, v in _body("alice/m", v1).items() if k != "hardware"},
        _body("alice/m", v1, name="Bad Name"),
    ]
    for body in cases:
        response = await client.post("/v1/deployments", json=body, headers=auth(users.alice))
        assert response.status_code == 422, (body, response.text)
    await _create(client, users.alice, _body("alice/m", v1))
    again = await client.post("/v1/deployments", json=_body("alice/m", v1), headers=auth(users.alice))
    assert again.status_code == 409
    for change in ({"hardware": "gpu-nonexistent"}, {"min_instances": 2}, {"version": other}, {}):
        response = await client.patch("/v1/deployments/alice/dep", json=change, headers=auth(users.alice))
        assert response.status_code == 422, (change, response.text)
    current = (await client.get("/v1/deployments/alice/dep", headers=auth(users.alice))).json()
    assert current["current_release"]["number"] == 1


async def test_known_hardware_is_accepted(
    client: httpx.AsyncClient, app: FastAPI, database: Database, users: Users
) -> None:
    app.state.backend.settings.hardware.append(HardwareSku(sku="gpu-t4", name="Nvidia T4 GPU"))  # an operator addition
    (v1,) = await _model_with_versions(client, database, users.alice, "alice/m", 1)
    created = await _create(client, users.alice, _body("alice/m", v1, hardware="gpu-t4"))
    assert created["current_release"]["configuration"]["hardware"] == "gpu-t4"


async def test_owners_orgs_and_others(client: httpx.AsyncClient, database: Database, users: Users) -> None:
    (v1,) = await _model_with_versions(client, database, users.alice, "acme/m", 1)
    org = await _create(client, users.alice, _body("acme/m", v1, name="acme/prod"))
    assert org["owner"] == "acme" and org["name"] == "prod"
    assert org["current_release"]["created_by"]["username"] == "alice"
    by_field = await _create(client, users.alice, _body("acme/m", v1, name="staging", owner="acme"))
    assert by_field["owner"] == "acme"

    # bob: not a member of acme and cannot see its private model
    denied = await client.post("/v1/deployments", json=_body("acme/m", v1, name="acme/x"), headers=auth(users.bob))
    assert denied.status_code == 422
    denied = await client.post("/v1/deployments", json=_body("acme/m", v1, name="x"), headers=auth(users.bob))
    assert denied.status_code == 422
    bob = auth(users.bob)
    for method, path, body in [
        ("GET", "/v1/deployments/acme/prod", None),
        ("PATCH", "/v1/deployments/acme/prod", {"max_instances": 2}),
        ("DELETE", "/v1/deployments/acme/prod", None),
        ("POST", "/v1/deployments/acme/prod/predictions", {"input": {"text": "x"}}),
        ("GET", "/v1/deployments/acme/nothing", None),
    ]:
        response = await client.request(method, path, json=body, headers=bob)
        assert response.status_code == 404, (method, path, response.text)
    assert (await client.get("/v1/deployments", headers=bob)).json()["results"] == []
    listed = (await client.get("/v1/deployments", headers=auth(users.alice))).json()["results"]
    assert {(d["owner"], d["name"]) for d in listed} == {("acme", "prod"), ("acme", "staging")}

    # a public model of someone else can be deployed; the deployment is still the deployer's alone
    (pub,) = await _model_with_versions(client, database, users.alice, "alice/pub", 1, visibility="public")
    mine = await _create(client, users.bob, _body("alice/pub", pub, name="mine"))
    assert mine["owner"] == "bob" and mine["current_release"]["model"] == "alice/pub"
    assert (await client.get("/v1/deployments/bob/mine", headers=auth(users.alice))).status_code == 404


async def test_delete_rules(client: httpx.AsyncClient, database: Database, settings: Settings, users: Users) -> None:
    settings.deployments.offline_before_delete = 0.3
    (v1,) = await _model_with_versions(client, database, users.alice, "alice/m", 1)
    await _create(client, users.alice, _body("alice/m", v1, min_instances=1))
    alice = auth(users.alice)

    async def delete() -> httpx.Response:
        return await client.delete("/v1/deployments/alice/dep", headers=alice)

    online = await delete()
    assert online.status_code == 409 and "min_instances" in online.json()["detail"]
    await client.patch("/v1/deployments/alice/dep", json={"min_instances": 0}, headers=alice)
    assert (await delete()).status_code == 409  # offline, but not for long enough
    await asyncio.sleep(0.4)
    async with database.session() as session:
        deployment, _ = await deployment_ops.find(session, await _principal(database, "alice"), "alice", "dep")
        await deployment_ops.touch(session, deployment)
    used = await delete()
    assert used.status_code == 409 and "unused" in used.json()["detail"]
    await asyncio.sleep(0.4)
    gone = await delete()
    assert gone.status_code == 204 and gone.content == b""
    assert (await client.get("/v1/deployments/alice/dep", headers=alice)).status_code == 404


async def test_deployed_version_cannot_be_deleted(client: httpx.AsyncClient, database: Database, users: Users) -> None:
    v1, v2 = await _model_with_versions(client, database, users.alice, "alice/m")
    await _create(client, users.alice, _body("alice/m", v1))
    refused = await client.delete(f"/v1/models/alice/m/versions/{v1}", headers=auth(users.alice))
    assert refused.status_code == 409 and "deployment" in refused.json()["detail"]
    await client.patch("/v1/deployments/alice/dep", json={"version": v2}, headers=auth(users.alice))
    accepted = await client.delete(f"/v1/models/alice/m/versions/{v1}", headers=auth(users.alice))
    assert accepted.status_code == 202


async def test_active_lists_every_deployment(client: httpx.AsyncClient, database: Database, users: Users) -> None:
    (v1,) = await _model_with_versions(client, database, users.alice, "alice/m", 1)
    await _create(client, users.alice, _body("alice/m", v1, min_instances=1, max_instances=4))
    await _create(client, users.alice, _body("alice/m", v1, name="acme/other"))
    async with database.session() as session:
        rows = await deployment_ops.active(session)
    assert [(d.name, d.hardware, d.min_instances, d.max_instances) for d in rows] == [
        ("dep", "cpu", 1, 4),
        ("other", "cpu", 0, 1),
    ]
    assert all(isinstance(d.version_pk, int) for d in rows)


async def _principal(database: Database, username: str) -> Principal:
    async with database.session() as session:
        account = await accounts.require(session, username)
        return Principal(account=account, acting_ids=frozenset({account.id}))
