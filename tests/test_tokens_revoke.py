"""Token lists and revocation (admin API): a revoked token is 401 on the next request, on every process."""

from __future__ import annotations

import logging

import httpx
import pytest
from sqlalchemy import delete

from cogport.api.principal_cache import PrincipalCache
from cogport.app import create_app
from cogport.db.engine import Database
from cogport.db.tables import ApiToken
from cogport.identifiers import hash_token
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
    for outside in (0, -1, 1 << 31, 33942520657, 1 << 63, 5402506967212481667137536):  # no INTEGER holds them
        assert (await client.delete(f"/admin/v1/tokens/{outside}")).status_code == 404
    assert (await client.delete(f"/admin/v1/tokens/{row['id']}", headers=auth(users.alice))).status_code == 403


class _Clock:
    """A monotonic clock that moves only when the test moves it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_other_processes_refuse_within_the_cache_ttl(
    client: httpx.AsyncClient, settings: Settings, users: Users
) -> None:
    """A second app on the same database stands for another API process. Its cache runs on a clock the test
    moves, so however slow the machine: the revoked token is answered from that cache until its TTL has passed,
    and refused from then on, without a restart."""
    other = create_app(settings)
    async with other.router.lifespan_context(other):
        cache: PrincipalCache = other.state.principals
        cache.clock = clock = _Clock()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://test") as there:
            assert (await there.get("/v1/account", headers=auth(users.alice))).status_code == 200
            revoked = await client.post("/admin/v1/tokens/revoke", json={"token": users.alice})
            assert revoked.status_code == 200, revoked.text
            clock.now += cache.ttl * 0.9
            assert (await there.get("/v1/account", headers=auth(users.alice))).status_code == 200  # cached
            clock.now += cache.ttl * 0.2
            assert (await there.get("/v1/account", headers=auth(users.alice))).status_code == 401
            assert (await there.get("/v1/account", headers=auth(ADMIN_TOKEN))).status_code == 200


async def _admin_token_ids(client: httpx.AsyncClient) -> list[int]:
    return [int(str(row["id"])) for row in await _tokens(client, "admin") if row["revoked_at"] is None]


async def test_the_last_admin_token_cannot_be_revoked(client: httpx.AsyncClient, users: Users) -> None:
    (only,) = await _admin_token_ids(client)
    for refused in (
        await client.post("/admin/v1/tokens/revoke", json={"token": ADMIN_TOKEN}),
        await client.delete(f"/admin/v1/tokens/{only}"),
    ):
        assert refused.status_code == 409, refused.text
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert "last valid admin token" in refused.json()["detail"]
    assert (await client.get("/v1/account")).status_code == 200
    # With a second admin token (another admin's here), either may go, but not both.
    await client.post("/admin/v1/accounts", json={"username": "root", "is_admin": True})
    second = (await client.post("/admin/v1/accounts/root/tokens", json={})).json()["token"]
    assert (await client.post("/admin/v1/tokens/revoke", json={"token": ADMIN_TOKEN})).status_code == 200
    last = await client.post("/admin/v1/tokens/revoke", json={"token": second}, headers=auth(second))
    assert last.status_code == 409, last.text
    assert (await client.get("/v1/account", headers=auth(second))).status_code == 200
    # A user's only token is no admin's: it goes as before.
    assert (await client.post("/admin/v1/tokens/revoke", json={"token": users.bob}, headers=auth(second))).is_success


async def test_a_revoked_admin_token_is_restored_at_start(
    client: httpx.AsyncClient, settings: Settings, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """``COGPORT_ADMIN_TOKEN`` is the operator's way in: revoked (or gone), the next start restores it."""
    second = (await client.post("/admin/v1/accounts/admin/tokens", json={})).json()["token"]
    assert (await client.post("/admin/v1/tokens/revoke", json={"token": ADMIN_TOKEN})).status_code == 200
    assert (await client.get("/v1/account")).status_code == 401

    async def restart() -> int:
        again = create_app(settings)
        async with again.router.lifespan_context(again):
            transport = httpx.ASGITransport(app=again)
            async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=auth(ADMIN_TOKEN)) as c:
                return (await c.get("/v1/account")).status_code

    with caplog.at_level(logging.WARNING, logger="cogport.bootstrap"):
        assert await restart() == 200
    assert "COGPORT_ADMIN_TOKEN was revoked" in caplog.text
    assert ADMIN_TOKEN not in caplog.text
    # Gone altogether (a row deleted by hand): created again.
    async with database.session() as session:
        await session.execute(delete(ApiToken).where(ApiToken.token_hash == hash_token(ADMIN_TOKEN)))
    assert await restart() == 200
    assert (await client.get("/v1/account", headers=auth(second))).status_code == 200
