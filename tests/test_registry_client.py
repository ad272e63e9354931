"""The registry through the official ``replicate`` 1.0.7 Python client, against a real server on a free port.

Calls are written the way users write them (module-level helpers, or a ``replicate.Client`` per
account). Versions are pushed through the data layer (``cogport.ops.versions.create``), using a
database handle of the test's own event loop (the server's engine belongs to the server thread).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from cogport.db.engine import Database
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.accounts import Users, create_users
from tests.support.registry import add_prediction, add_version


@dataclass
class Live:
    replicate: Any
    url: str
    users: Users
    database: Database
    admin: httpx.AsyncClient

    def client(self, token: str) -> Any:
        return self.replicate.Client(api_token=token, base_url=self.url)


@pytest.fixture
async def live(live_server: LiveServer, replicate_env: Any) -> AsyncIterator[Live]:
    database = Database(live_server.settings)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with httpx.AsyncClient(base_url=live_server.url, headers=headers) as admin:
        users = await create_users(admin)
        yield Live(replicate_env, live_server.url, users, database, admin)
    await database.dispose()


def _status(call: Any) -> int:
    """The HTTP status of the ``ReplicateError`` that ``call()`` raises."""
    from replicate.exceptions import ReplicateError

    with pytest.raises(ReplicateError) as raised:
        call()
    status: int = raised.value.status
    return status


async def test_models_create_get_and_versions(live: Live) -> None:
    alice = live.client(live.users.alice)
    model = alice.models.create(
        owner="alice",
        name="hello-world",
        visibility="public",
        hardware="cpu",
        description="Says hello",
        github_url="https://github.com/alice/hello-world",
    )
    assert (model.owner, model.name, model.visibility, model.run_count) == ("alice", "hello-world", "public", 0)
    assert model.description == "Says hello"
    assert model.latest_version is None

    first = await add_version(live.database, "alice/hello-world")
    second = await add_version(live.database, "alice/hello-world")

    fetched = live.replicate.models.get("alice/hello-world")  # module level, as users call it
    assert fetched.id == "alice/hello-world"
    assert fetched.latest_version.id == second
    assert isinstance(fetched.latest_version.created_at, datetime.datetime)
    assert fetched.latest_version.openapi_schema["components"]["schemas"]["Input"]["type"] == "object"
    assert live.replicate.models.get("alice", "hello-world").url == fetched.url

    versions = fetched.versions.list()
    assert [v.id for v in versions.results] == [second, first]
    assert versions.next is None
    version = fetched.versions.get(first)
    assert version.id == first
    assert version.cog_version == "0.23.1"


async def test_list_search_and_paginate(live: Live) -> None:
    bob = live.client(live.users.bob)
    for i in range(28):
        bob.models.create(owner="bob", name=f"model-{i:02d}", visibility="public", hardware="cpu")
    live.client(live.users.alice).models.create(
        owner="alice", name="model-private", visibility="private", hardware="cpu"
    )

    page = live.replicate.models.list()
    assert len(page.results) == 25
    assert page.next is not None
    assert page.next.startswith(live.url + "/v1/models?cursor=")

    names = [m.name for p in live.replicate.paginate(live.replicate.models.list) for m in p]
    assert names == [f"model-{i:02d}" for i in reversed(range(28))]

    found = live.replicate.models.search("model-1")
    assert sorted(m.name for m in found.results) == [f"model-{i}" for i in range(10, 20)]
    assert live.replicate.models.search("no such thing").results == []
    # alice finds her private model; bob does not
    assert [m.name for m in live.client(live.users.alice).models.search("private").results] == ["model-private"]
    assert bob.models.search("private").results == []


async def test_hardware_collections_account_and_secret(live: Live) -> None:
    skus = live.replicate.hardware.list()
    assert [(h.sku, h.name) for h in skus] == [("cpu", "CPU")]

    bob = live.client(live.users.bob)
    bob.models.create(owner="bob", name="sdxl", visibility="public", hardware="cpu")
    body = {"slug": "image-generation", "name": "Image generation", "description": "Pictures", "models": ["bob/sdxl"]}
    assert (await live.admin.post("/admin/v1/collections", json=body)).status_code == 201

    collections = live.replicate.collections.list()
    assert [(c.slug, c.name, c.description) for c in collections] == [
        ("image-generation", "Image generation", "Pictures")
    ]
    collection = live.replicate.collections.get("image-generation")
    assert [m.id for m in collection] == ["bob/sdxl"]
    assert _status(lambda: live.replicate.collections.get("nope")) == 404

    account = bob.accounts.current()
    assert (account.type, account.username, account.name) == ("user", "bob", "bob")
    secret = bob.webhooks.default.secret()
    assert secret.key.startswith("whsec_")
    assert secret.key != live.client(live.users.alice).webhooks.default.secret().key


async def test_isolation_between_accounts(live: Live) -> None:
    alice = live.client(live.users.alice)
    bob = live.client(live.users.bob)
    alice.models.create(owner="alice", name="secret", visibility="private", hardware="cpu")
    alice.models.create(owner="acme", name="team", visibility="private", hardware="cpu")
    vid = await add_version(live.database, "alice/secret")

    assert alice.models.get("alice/secret").visibility == "private"
    assert alice.models.get("acme/team").owner == "acme"
    for ref in ("alice/secret", "acme/team"):
        assert _status(lambda ref=ref: bob.models.get(ref)) == 404
    assert _status(lambda: bob.models.get("alice/secret").versions.list()) == 404
    model = alice.models.get("alice/secret")
    model._client = bob  # bob holding a stale Model object still gets nothing
    assert _status(lambda: model.versions.list()) == 404
    assert _status(lambda: model.versions.get(vid)) == 404
    assert _status(lambda: model.versions.delete(vid)) == 404
    assert _status(lambda: bob.models.delete("alice/secret")) == 404
    assert "secret" not in [m.name for m in bob.models.list()]

    # creating for someone else, bad hardware, bad visibility
    assert _status(lambda: bob.models.create(owner="alice", name="x", visibility="public", hardware="cpu")) == 422
    assert _status(lambda: bob.models.create(owner="acme", name="x", visibility="public", hardware="cpu")) == 422
    assert _status(lambda: bob.models.create(owner="bob", name="x", visibility="public", hardware="gpu-x")) == 422
    assert _status(lambda: bob.models.create(owner="bob", name="x", visibility="hidden", hardware="cpu")) == 422

    # a wrong token
    stranger = live.client("r8_not_a_real_token_at_all_000000000000")
    assert _status(lambda: stranger.models.list()) == 401
    assert _status(lambda: stranger.hardware.list()) == 401


async def _poll_gone(model: Any, vid: str) -> None:
    for _ in range(1000):
        if vid not in [v.id for v in model.versions.list()]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"version {vid} is still listed")


async def test_version_delete_through_the_client(live: Live) -> None:
    alice = live.client(live.users.alice)
    alice.models.create(owner="alice", name="scratch", visibility="private", hardware="cpu")
    keep = await add_version(live.database, "alice/scratch")
    drop = await add_version(live.database, "alice/scratch")
    run = await add_version(live.database, "alice/scratch")
    prediction = await add_prediction(live.database, "alice/scratch", drop, "alice")
    await add_prediction(live.database, "alice/scratch", run, "bob")  # e.g. when the model was public
    model = alice.models.get("alice/scratch")

    # Replicate answers 202 (accepted, processed in the background); the 1.0.7 client checks for 204,
    # so it reports False although the deletion was accepted.
    assert model.versions.delete(drop) is False
    await _poll_gone(model, drop)
    assert _status(lambda: model.versions.get(drop)) == 404
    assert alice.models.get("alice/scratch").latest_version.id == run

    # the prediction went with it: the version leaves the listing at once (it is marked), and the
    # Janitor purges it and its predictions in the background, so wait for that
    from cogport.db.tables import Prediction

    for _ in range(1500):
        async with live.database.session() as session:
            if await session.get(Prediction, prediction) is None:
                break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError(f"prediction {prediction} of the deleted version was never purged")

    # someone else ran this one: refused (409), and nothing changes
    assert _status(lambda: model.versions.delete(run)) == 409
    assert sorted(v.id for v in model.versions.list()) == sorted([keep, run])
    # public models' versions cannot be deleted (and the model cannot be either)
    bob = live.client(live.users.bob)
    bob.models.create(owner="bob", name="open", visibility="public", hardware="cpu")
    open_vid = await add_version(live.database, "bob/open")
    assert _status(lambda: bob.models.get("bob/open").versions.delete(open_vid)) == 409
    assert _status(lambda: bob.models.delete("bob/open")) == 409

    # a private model without versions can be deleted
    bob.models.create(owner="bob", name="empty", visibility="private", hardware="cpu")
    assert bob.models.delete("bob/empty") is True
    assert _status(lambda: bob.models.get("bob/empty")) == 404
