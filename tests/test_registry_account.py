"""Accounts, tokens, auth, the webhook secret, hardware and the admin API (in-process)."""

from __future__ import annotations

import base64

import httpx
import pytest
from sqlalchemy import select

from cogport import hardware
from cogport.app import create_app
from cogport.db.engine import Database
from cogport.db.tables import ApiToken
from cogport.settings import HardwareSku, Settings
from tests.support.accounts import Users
from tests.support.openapi import validate
from tests.support.registry import auth, create_model

PROTECTED = [
    ("GET", "/v1/account"),
    ("GET", "/v1/webhooks/default/secret"),
    ("GET", "/v1/hardware"),
    ("GET", "/v1/collections"),
    ("GET", "/v1/collections/anything"),
    ("GET", "/v1/models"),
    ("POST", "/v1/models"),
    ("QUERY", "/v1/models"),
    ("GET", "/v1/models/alice/m"),
    ("PATCH", "/v1/models/alice/m"),
    ("DELETE", "/v1/models/alice/m"),
    ("GET", "/v1/models/alice/m/readme"),
    ("GET", "/v1/models/alice/m/examples"),
    ("GET", "/v1/models/alice/m/versions"),
    ("GET", "/v1/models/alice/m/versions/abc"),
    ("DELETE", "/v1/models/alice/m/versions/abc"),
    ("GET", "/admin/v1/accounts"),
    ("POST", "/admin/v1/collections"),
]


async def test_account(client: httpx.AsyncClient, users: Users) -> None:
    response = await client.get("/v1/account", headers=auth(users.alice))
    assert response.status_code == 200
    body = response.json()
    validate("/account", "get", 200, body)
    assert body == {"type": "user", "username": "alice", "name": "alice"}
    # the legacy scheme works too, in any case
    legacy = await client.get("/v1/account", headers={"Authorization": f"token {users.bob}"})
    assert legacy.status_code == 200
    assert legacy.json()["username"] == "bob"


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        (None, "You did not pass an authentication token"),
        ("", "You did not pass an authentication token"),
        ("Bearer", "You did not pass a valid authentication token"),
        ("Bearer r8_wrong", "You did not pass a valid authentication token"),
        ("Token r8_wrong", "You did not pass a valid authentication token"),
        ("Basic YWxpY2U6cHc=", "You did not pass a valid authentication token"),
    ],
)
async def test_missing_or_wrong_token_is_401_everywhere(
    client: httpx.AsyncClient, header: str | None, detail: str
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    unauthenticated = httpx.AsyncClient(transport=client._transport, base_url=str(client.base_url), headers=headers)
    async with unauthenticated:
        for method, path in PROTECTED:
            response = await unauthenticated.request(method, path)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json() == {"title": "Unauthenticated", "detail": detail, "status": 401}


async def test_admin_api_needs_an_admin(client: httpx.AsyncClient, users: Users) -> None:
    for method, path in [
        ("GET", "/admin/v1/accounts"),
        ("POST", "/admin/v1/accounts"),
        ("GET", "/admin/v1/accounts/bob"),
        ("POST", "/admin/v1/accounts/bob/tokens"),
        ("PATCH", "/admin/v1/accounts/acme/members"),
        ("POST", "/admin/v1/collections"),
        ("PATCH", "/admin/v1/collections/x"),
        ("DELETE", "/admin/v1/collections/x"),
    ]:
        response = await client.request(method, path, json={}, headers=auth(users.alice))
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["title"] == "Forbidden"


async def test_tokens_are_stored_hashed(client: httpx.AsyncClient, users: Users, database: Database) -> None:
    async with database.session() as session:
        rows = list((await session.execute(select(ApiToken))).scalars())
    assert len(rows) == 3  # admin, alice, bob
    for row in rows:
        assert users.alice not in (row.token_hash, row.hint, row.label)
        assert len(row.token_hash) == 64
    assert users.alice.startswith("r8_")
    assert len(users.alice) == 40

    second = await client.post("/admin/v1/accounts/alice/tokens", json={"label": "laptop"})
    assert second.status_code == 201
    token = second.json()["token"]
    assert token != users.alice
    assert second.json()["hint"] == token[:3] + "…" + token[-4:]
    for t in (token, users.alice):
        assert (await client.get("/v1/account", headers=auth(t))).json()["username"] == "alice"

    org = await client.post("/admin/v1/accounts/acme/tokens", json={})
    assert org.status_code == 400
    assert "organization" in org.json()["detail"]
    missing = await client.post("/admin/v1/accounts/nobody/tokens", json={})
    assert missing.status_code == 404


async def test_admin_accounts(client: httpx.AsyncClient, users: Users) -> None:
    listed = (await client.get("/admin/v1/accounts")).json()
    assert [(a["username"], a["type"], a["is_admin"]) for a in listed] == [
        ("admin", "user", True),
        ("alice", "user", False),
        ("bob", "user", False),
        ("acme", "organization", False),
    ]
    assert listed[3]["members"] == ["alice"]

    cases = [
        ({"username": "alice"}, 409),
        ({"username": "Not Valid"}, 422),
        ({"username": "carol", "members": ["bob"]}, 400),  # users have no members
        ({"username": "org2", "type": "organization", "members": ["nobody"]}, 404),
        ({"username": "org2", "type": "organization", "members": ["acme"]}, 400),
        ({"username": "org2", "type": "organization", "is_admin": True}, 400),
        ({"username": "carol", "role": "x"}, 422),
    ]
    for body, status in cases:
        response = await client.post("/admin/v1/accounts", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["status"] == status
    # nothing half-created by the refused requests
    assert (await client.get("/admin/v1/accounts/carol")).status_code == 404
    assert (await client.get("/admin/v1/accounts/org2")).status_code == 404

    await create_model(client, users.alice, "acme/internal", visibility="private")
    assert (await client.get("/v1/models/acme/internal", headers=auth(users.bob))).status_code == 404
    response = await client.patch("/admin/v1/accounts/acme/members", json={"add": ["bob"]})
    assert response.status_code == 200
    assert response.json()["members"] == ["alice", "bob"]
    assert (await client.get("/v1/models/acme/internal", headers=auth(users.bob))).status_code == 200
    response = await client.patch("/admin/v1/accounts/acme/members", json={"remove": ["bob"]})
    assert response.json()["members"] == ["alice"]
    assert (await client.get("/v1/models/acme/internal", headers=auth(users.bob))).status_code == 404


async def test_webhook_secret_per_account(client: httpx.AsyncClient, users: Users) -> None:
    keys = {}
    for name, token in (("alice", users.alice), ("bob", users.bob)):
        response = await client.get("/v1/webhooks/default/secret", headers=auth(token))
        assert response.status_code == 200
        validate("/webhooks/default/secret", "get", 200, response.json())
        key = response.json()["key"]
        assert key == (await client.get("/v1/webhooks/default/secret", headers=auth(token))).json()["key"]
        prefix, _, secret = key.partition("_")
        assert prefix == "whsec" and "_" not in secret  # the official clients split on "_"
        assert len(base64.b64decode(secret)) >= 24
        keys[name] = key
    assert keys["alice"] != keys["bob"]


async def test_hardware_lists_cpu_and_operator_skus(settings: Settings, users: Users) -> None:
    configured = settings.model_copy(
        update={"hardware": [HardwareSku(sku="gpu-a100-large", name="Nvidia A100 (80GB) GPU")]}
    )
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get("/v1/hardware", headers=auth(users.bob))
            assert response.status_code == 200
            validate("/hardware", "get", 200, response.json())
            assert response.json() == [
                {"sku": "cpu", "name": "CPU"},
                {"sku": "gpu-a100-large", "name": "Nvidia A100 (80GB) GPU"},
            ]
            model = {"owner": "bob", "name": "big", "visibility": "public", "hardware": "gpu-a100-large"}
            created = await client.post("/v1/models", json=model, headers=auth(users.bob))
            assert created.status_code == 201, created.text
            assert created.json()["hardware"] == "gpu-a100-large"


def test_detected_gpus_become_skus() -> None:
    skus = hardware.skus_for(["NVIDIA H100 80GB HBM3"] * 2 + ["Tesla T4", "NVIDIA RTX A6000"])
    assert [(s.sku, s.name) for s in skus] == [
        ("gpu-h100", "Nvidia H100 GPU"),
        ("gpu-h100-2x", "2x Nvidia H100 GPU"),
        ("gpu-t4", "Nvidia T4 GPU"),
        ("gpu-rtx-a6000", "NVIDIA RTX A6000"),
    ]
    assert hardware.sku_for_gpu("NVIDIA A100-SXM4-80GB") == ("gpu-a100-large", "Nvidia A100 (80GB) GPU")
    assert hardware.sku_for_gpu("NVIDIA A100-SXM4-40GB") == ("gpu-a100", "Nvidia A100 GPU")
    assert hardware.sku_for_gpu("NVIDIA L40S") == ("gpu-l40s", "Nvidia L40S GPU")
