"""Version ids include the model: the same files in two models are two versions, and a bare id names one."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from cogport.db.engine import Database
from cogport.db.tables import Account, Model, Version
from tests.support.accounts import Users
from tests.support.pushing import (  # noqa: F401 - fixtures
    EXAMPLES,
    push_dir,
    shared_build_dirs,
    shared_venvs,
)
from tests.support.registry import auth

pytestmark = pytest.mark.usefixtures("shared_build_dirs")


def _client(app: FastAPI, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=auth(token))


async def _model(client: httpx.AsyncClient, owner: str, visibility: str = "private") -> None:
    body = {"owner": owner, "name": "m", "visibility": visibility, "hardware": "cpu"}
    response = await client.post("/v1/models", json=body)
    assert response.status_code == 201, response.text


async def test_same_files_in_two_models_are_two_versions(app: FastAPI, users: Users) -> None:
    async with _client(app, users.alice) as alice, _client(app, users.bob) as bob:
        await _model(alice, "alice")
        await _model(bob, "bob")
        first = await push_dir(alice, EXAMPLES / "hello-world", "alice/m")
        again = await push_dir(alice, EXAMPLES / "hello-world", "alice/m")
        theirs = await push_dir(bob, EXAMPLES / "hello-world", "bob/m")
        assert first["status"] == again["status"] == theirs["status"] == "succeeded", theirs["logs"]
        assert first["version"] == again["version"]  # pushing twice is idempotent
        assert "already exists" in again["logs"]
        assert theirs["version"] != first["version"]
        assert "reusing that build" in theirs["logs"]  # the files were built once

        # bob's bare id runs bob's model; alice's (private) id is not his to run
        response = await bob.post(
            "/v1/predictions", json={"version": theirs["version"], "input": {"text": "x"}}, headers={"Prefer": "wait"}
        )
        assert response.status_code == 201, response.text
        assert response.json()["model"] == "bob/m"
        assert response.json()["version"] == theirs["version"]
        refused = await bob.post("/v1/predictions", json={"version": first["version"], "input": {"text": "x"}})
        assert refused.status_code == 422, refused.text
        assert (await bob.get(f"/v1/models/alice/m/versions/{first['version']}")).status_code == 404


async def test_a_bare_id_shared_by_old_versions_is_refused(
    app: FastAPI, client: httpx.AsyncClient, users: Users
) -> None:
    """Versions pushed before ids included the model can share an id: a bare id then names no one model."""
    async with _client(app, users.alice) as alice, _client(app, users.bob) as bob:
        await _model(alice, "alice", visibility="public")
        await _model(bob, "bob")
        mine = await push_dir(alice, EXAMPLES / "hello-world", "alice/m")
        theirs = await push_dir(bob, EXAMPLES / "hello-world", "bob/m")
        database: Database = app.state.database
        async with database.session() as session:
            bob_m = await session.scalar(
                select(Model.id).join(Account, Account.id == Model.owner_id).where(Account.username == "bob")
            )
            await session.execute(update(Version).where(Version.model_id == bob_m).values(id=mine["version"]))
        assert theirs["version"] != mine["version"]
        body = {"version": mine["version"], "input": {"text": "x"}}
        ambiguous = await bob.post("/v1/predictions", json=body)
        assert ambiguous.status_code == 422, ambiguous.text
        assert "owner/name:id" in ambiguous.json()["detail"]
        # alice does not see bob's private model, so for her the id is hers alone
        assert (await alice.post("/v1/predictions", json=body)).status_code == 201
        # with the model named, bob runs his own
        named = await bob.post("/v1/predictions", json={**body, "version": f"bob/m:{mine['version']}"})
        assert named.status_code == 201, named.text
        assert named.json()["model"] == "bob/m"
