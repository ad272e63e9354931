"""Shared fixtures: a real database (SQLite or PostgreSQL), the app, a live server, the official client.

``COGPORT_TEST_DATABASE_URL`` picks the database: unset means a fresh SQLite file per test;
``postgresql://127.0.0.1:5432/test`` gives each test its own PostgreSQL schema.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from cogport.app import create_app
from cogport.db.engine import Database
from cogport.settings import RuntimeSettings, Settings, WebhookSettings
from tests.support import accounts as account_support
from tests.support.webhooks import Receiver

# Ray turns 127.0.0.1 in a cluster address into the machine's outward address unless "clusters" are off
# (a flag Ray reads once, at import): with it, a driver here reaches the test clusters over loopback, where
# they listen (tests/test_cluster_ray.py).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
ADMIN_TOKEN = "r8_admintoken0000000000000000000000000000"
PG_URL = os.environ.get("COGPORT_TEST_DATABASE_URL", "")


def _drop_schema(schema: str) -> None:
    import asyncpg

    async def drop() -> None:
        conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    schema = None
    if PG_URL:
        schema = f"t_{uuid.uuid4().hex[:12]}"
    tmp_path.chmod(0o777)  # models run as uids of their own: they write markers and gates here
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=PG_URL,
        database_schema=schema,
        admin_token=ADMIN_TOKEN,
        detect_gpus=False,
        register_examples=False,
        # Models run sandboxed; they see tmp_path, where tests put markers and gates for them.
        runtime=RuntimeSettings(sandbox_binds=[tmp_path]),
        # the suite's webhook receivers listen on 127.0.0.1 (tests/support/webhooks.py); the default
        # (refused) is tested in tests/test_webhooks_policy.py
        webhooks=WebhookSettings(allow_private_networks=True),
    )
    yield settings
    if schema:
        _drop_schema(schema)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def database(app: FastAPI) -> Database:
    db: Database = app.state.database
    return db


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client (ASGI transport) with the admin token."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as c:
        yield c


@pytest.fixture
async def users(client: httpx.AsyncClient) -> account_support.Users:
    """Two users, ``alice`` and ``bob``, plus an org ``acme`` with alice as member."""
    return await account_support.create_users(client)


@dataclass
class LiveServer:
    url: str
    app: FastAPI
    settings: Settings


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """A real uvicorn server on an ephemeral loopback port, in a thread of its own."""
    sock = _free_socket()
    port = sock.getsockname()[1]
    settings.port = port  # the server's own loopback URL (coglet uploads, file inputs) uses it
    application = create_app(settings)
    config = uvicorn.Config(application, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(6000):  # 120 s: a server joining a Ray cluster on a loaded machine takes a while
        if server.started:
            break
        if not thread.is_alive():
            raise RuntimeError("the server failed to start")
        threading.Event().wait(0.02)
    else:
        raise RuntimeError("the server did not start in time")
    yield LiveServer(url=f"http://127.0.0.1:{port}", app=application, settings=settings)
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


@pytest.fixture
def proxied_url(live_server: LiveServer) -> Iterator[str]:
    """The live server behind a reverse proxy, under a name and port it does not listen on
    (tests/support/reverse_proxy.py): the URL clients are given."""
    from tests.support.reverse_proxy import reverse_proxy

    with reverse_proxy(live_server.url) as url:
        yield url


@pytest.fixture
def replicate_env(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The official ``replicate`` module pointed at the live server, as users configure it (env vars)."""
    import replicate

    monkeypatch.setenv("REPLICATE_BASE_URL", live_server.url)
    monkeypatch.setenv("REPLICATE_API_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.05")
    _reset_default_client(replicate)
    replicate.default_client.poll_interval = 0.05
    yield replicate
    _reset_default_client(replicate)


def _reset_default_client(replicate: Any) -> None:
    client = replicate.default_client
    client._Client__client = None
    client._Client__async_client = None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A started webhook receiver on 127.0.0.1 (tests/support/webhooks.py), stopped after the test."""
    hook = Receiver()
    hook.start()
    yield hook
    hook.stop()
