"""Token lists and revocation (admin API): a revoked token is 401 on the next request, on every process."""

from __future__ import annotations

import asyncio

import httpx

from cogport.api.principal_cache import PrincipalCache
from cogport.app import create_app
from cogport.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.support.accounts import Users
from tests.support.registry import auth


async def _tokens(client: httpx.AsyncClient, username: str) -> list[dict[str, object]]:
    response = await client.get(f"/admin/v1/accounts/{username}/tokens")
    assert response.status_code == 200, response.text
    rows: list[dict[str, object]] = response.json()
    return rows


async def test_list_shows_hints_never_tokens(client: httpx.AsyncClient, users: Users) -> None:
    second = await client.post("/admin/v1/accounts/alice/tokens", json={"label": "laptop"})
    assert second.status_code == 201, second.text
    rows = await _tokens(client, "alice")
    assert [row["label"] for row in rows] == [None, "laptop"]
    for row, plain in zip(rows, [users.alice, second.json()["token"]], strict=True):
        assert set(row) == {"id", "account", "hint", "label", "created_at", "revoked_at"}
        assert row["account"] == "alice" and row["revoked_at"] is None
        assert row["hint"] == plain[:3] + "…" + plain[-4:]
        assert plain not in str(rows)
    assert (await client.get("/admin/v1/accounts/nobody/tokens")).status_code == 404
    assert (await client.get("/admin/v1/accounts/alice/tokens", headers=auth(users.bob))).status_code == 403


async def test_revoked_token_is_refused_on_the_next_request(client: httpx.AsyncClient, users: Users) -> None:
    assert (await client.get("/v1/account", headers=auth(users.alice))).status_code == 200  # cached now
    revoked = await client.post("/admin/v1/tokens/revoke", json={"token": users.alice})
    assert revoked.status_code == 200, revoked.text
    body = revoked.json()
    assert body["account"] == "alice" and body["revoked_at"]
    refused = await client.get("/v1/account", headers=auth(users.alice))
    assert refused.status_code == 401, refused.text
    # idempotent: the first revocation time stays
    again = await client.post("/admin/v1/tokens/revoke", json={"token": users.alice})
    assert again.status_code == 200 and again.json()["revoked_at"] == body["revoked_at"]
    assert (await _tokens(client, "alice"))[0]["revoked_at"] == body["revoked_at"]
    # bob is untouched
    assert (await client.get("/v1/account", headers=auth(users.bob))).status_code == 200
    unknown = await client.post("/admin/v1/tokens/revoke", json={"token": "r8_nosuchtoken"})
    assert unknown.status_code == 404


async def test_revoke_by_id(client: httpx.AsyncClient, users: Users) -> None:
    assert (await client.get("/v1/account", headers=auth(users.bob))).status_code == 200
    (row,) = await _tokens(client, "bob")
    revoked = await client.delete(f"/admin/v1/tokens/{row['id']}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["id"] == row["id"] and revoked.json()["account"] == "bob"
    assert (await client.get("/v1/account", headers=auth(users.bob))).status_code == 401
    assert (await client.get("/v1/account", headers=auth(users.alice))).status_code == 200
    assert (await client.delete("/admin/v1/tokens/999999")).status_code == 404
    assert (await client.delete(f"/admin/v1/tokens/{row['id']}", headers=auth(users.alice))).status_code == 403


async def test_other_processes_refuse_within_the_cache_ttl(
    client: httpx.AsyncClient, settings: Settings, users: Users
) -> None:
    """A second app on the same database stands for another API process: its cache entry expires."""
    other = create_app(settings)
    async with other.router.lifespan_context(other):
        other.state.principals = PrincipalCache(ttl=0.3)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://test") as there:
            assert (await there.get("/v1/account", headers=auth(users.alice))).status_code == 200
            revoked = await client.post("/admin/v1/tokens/revoke", json={"token": users.alice})
            assert revoked.status_code == 200, revoked.text
            assert (await there.get("/v1/account", headers=auth(users.alice))).status_code == 200  # cached
            await asyncio.sleep(0.4)
            assert (await there.get("/v1/account", headers=auth(users.alice))).status_code == 401
            assert (await there.get("/v1/account", headers=auth(ADMIN_TOKEN))).status_code == 200
