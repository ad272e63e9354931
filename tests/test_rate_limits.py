"""Per-account rate limits: 429 problem JSON with Retry-After, other accounts unaffected, and one count
shared by every API process on PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from cogport.app import create_app
from cogport.settings import RateLimitSettings, Settings
from tests.conftest import ADMIN_TOKEN
from tests.support.accounts import Users, create_user

NOW = 1_800_000_015.0
"""A fixed clock, 15 s into a window: the test never straddles a window's edge."""
PG_URL = os.environ.get("COGPORT_TEST_DATABASE_URL") or "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.rate_limit = RateLimitSettings(creates_per_minute=2, requests_per_minute=4)
    return settings


def fix_clock(app: FastAPI) -> None:
    app.state.rate_limiter.clock = lambda: NOW


def as_user(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["Retry-After"] == "45"
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == 429 and body["title"] == "Too many requests" and "throttled" in body["detail"]


async def test_requests_over_the_limit_are_refused_for_that_account_only(
    app: FastAPI, client: httpx.AsyncClient, users: Users
) -> None:
    fix_clock(app)
    for _ in range(4):
        assert (await client.get("/v1/account", headers=as_user(users.alice))).status_code == 200
    assert_limited(await client.get("/v1/account", headers=as_user(users.alice)))
    assert_limited(await client.get("/v1/models", headers=as_user(users.alice)))
    assert (await client.get("/v1/account", headers=as_user(users.bob))).status_code == 200
    assert (await client.get("/v1/account")).status_code == 200  # the admin is not limited
    metrics = await client.get("/metrics")
    assert 'cogport_rate_limited_total{kind="request"} 2.0' in metrics.text


async def test_creates_have_a_limit_of_their_own(app: FastAPI, client: httpx.AsyncClient, users: Users) -> None:
    fix_clock(app)
    body = {"version": "0" * 64, "input": {}}
    for _ in range(2):  # refused for the unknown version, yet counted
        response = await client.post("/v1/predictions", json=body, headers=as_user(users.alice))
        assert response.status_code == 422, response.text
    assert_limited(await client.post("/v1/predictions", json=body, headers=as_user(users.alice)))
    assert_limited(
        await client.post("/v1/models/alice/nothing/predictions", json={"input": {}}, headers=as_user(users.alice))
    )
    assert (await client.get("/v1/account", headers=as_user(users.alice))).status_code == 200
    assert (await client.post("/v1/predictions", json=body, headers=as_user(users.bob))).status_code == 422


async def test_a_new_window_starts_afresh(app: FastAPI, client: httpx.AsyncClient, users: Users) -> None:
    fix_clock(app)
    for _ in range(4):
        await client.get("/v1/account", headers=as_user(users.alice))
    assert_limited(await client.get("/v1/account", headers=as_user(users.alice)))
    app.state.rate_limiter.clock = lambda: NOW + 60
    assert (await client.get("/v1/account", headers=as_user(users.alice))).status_code == 200


async def test_zero_turns_a_limit_off(app: FastAPI, client: httpx.AsyncClient, users: Users) -> None:
    app.state.rate_limiter.settings = RateLimitSettings(creates_per_minute=0, requests_per_minute=0)
    for _ in range(10):
        assert (await client.get("/v1/account", headers=as_user(users.alice))).status_code == 200


@pytest.fixture
def pg_settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings on PostgreSQL (always, even in the SQLite pass), in a schema of their own."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=PG_URL,
        database_schema=schema,
        admin_token=ADMIN_TOKEN,
        detect_gpus=False,
        register_examples=False,
        rate_limit=RateLimitSettings(creates_per_minute=3, requests_per_minute=5),
    )
    yield settings
    asyncio.run(_drop(schema))


async def _drop(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_URL)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def test_two_api_processes_on_postgresql_share_the_limit(pg_settings: Settings) -> None:
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):  # two apps, as two API processes would be: nothing shared but the database
            app = create_app(pg_settings.model_copy(deep=True))
            await stack.enter_async_context(app.router.lifespan_context(app))
            fix_clock(app)
            client = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=as_user(ADMIN_TOKEN)
            )
            clients.append(await stack.enter_async_context(client))
        alice = await create_user(clients[0], "alice")
        bob = await create_user(clients[0], "bob")
        answers = await asyncio.gather(*(clients[i % 2].get("/v1/account", headers=as_user(alice)) for i in range(8)))
        assert sorted(r.status_code for r in answers) == [200] * 5 + [429] * 3
        assert_limited(await clients[1].get("/v1/account", headers=as_user(alice)))
        assert_limited(await clients[0].get("/v1/account", headers=as_user(alice)))
        assert (await clients[1].get("/v1/account", headers=as_user(bob))).status_code == 200
        body = {"version": "0" * 64, "input": {}}
        creates = [await clients[i % 2].post("/v1/predictions", json=body, headers=as_user(bob)) for i in range(4)]
        assert [r.status_code for r in creates] == [422, 422, 422, 429]
