"""Versions over HTTP: list, get, and delete with Replicate's rules, removed in the background by the Janitor."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, update

from cogport.db.engine import Database
from cogport.db.tables import Model, Prediction, StoredFile, Version
from tests.support.accounts import Users
from tests.support.openapi import validate
from tests.support.registry import add_prediction, add_version, auth, create_model

VERSIONS = "/models/{model_owner}/{model_name}/versions"
VERSION = VERSIONS + "/{version_id}"


async def _set_visibility(database: Database, name: str, visibility: str) -> None:
    async with database.session() as session:
        await session.execute(update(Model).where(Model.name == name).values(visibility=visibility))


async def _count(database: Database, table: type[Version] | type[Prediction] | type[StoredFile], *where: object) -> int:
    async with database.session() as session:
        return int(await session.scalar(select(func.count()).select_from(table).where(*where)) or 0)  # type: ignore[arg-type]


async def _delete(client: httpx.AsyncClient, token: str, ref: str, vid: str) -> httpx.Response:
    return await client.delete(f"/v1/models/{ref}/versions/{vid}", headers=auth(token))


async def _until_gone(database: Database, vid: str) -> None:
    """Wait until the Janitor has removed the version row (it is woken by the DELETE)."""
    for _ in range(1000):
        if await _count(database, Version, Version.id == vid) == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"version {vid} was never removed")


async def test_list_and_get_versions(client: httpx.AsyncClient, users: Users, database: Database) -> None:
    await create_model(client, users.alice, "alice/m")
    ids = [await add_version(database, "alice/m") for _ in range(3)]

    response = await client.get("/v1/models/alice/m/versions", headers=auth(users.bob))
    assert response.status_code == 200
    page = response.json()
    validate(VERSIONS, "get", 200, page)
    assert [v["id"] for v in page["results"]] == ids[::-1]
    assert page["next"] is None
    assert page["previous"] is None

    response = await client.get(f"/v1/models/alice/m/versions/{ids[0]}", headers=auth(users.bob))
    assert response.status_code == 200
    version = response.json()
    validate(VERSION, "get", 200, version)
    assert version["id"] == ids[0]
    assert version["cog_version"] == "0.23.1"
    assert version["openapi_schema"]["components"]["schemas"]["Output"] == {"type": "string"}
    assert version["created_at"].endswith("Z")
    # ids are matched case-insensitively; unknown ids, and versions of other models, are 404
    assert (await client.get(f"/v1/models/alice/m/versions/{ids[0].upper()}", headers=auth(users.bob))).status_code == (
        200
    )
    assert (await client.get("/v1/models/alice/m/versions/" + "0" * 64, headers=auth(users.bob))).status_code == 404
    await create_model(client, users.bob, "bob/other")
    assert (await client.get(f"/v1/models/bob/other/versions/{ids[0]}", headers=auth(users.bob))).status_code == 404


async def test_delete_version_removes_it_its_predictions_and_files(
    app: FastAPI, client: httpx.AsyncClient, users: Users, database: Database
) -> None:
    await create_model(client, users.alice, "alice/private", visibility="private")
    old = await add_version(database, "alice/private")
    new = await add_version(database, "alice/private")
    storage = app.state.storage
    key = "outputs/test/out.txt"
    await storage.put(key, b"hello")
    prediction_id = await add_prediction(database, "alice/private", new, "alice", output_key=key)
    kept = await add_prediction(database, "alice/private", old, "alice")

    response = await _delete(client, users.alice, "alice/private", new)
    assert response.status_code == 202
    assert response.content == b""

    # at once: the version is gone from the API, and the model's latest version is the older one
    assert (await client.get(f"/v1/models/alice/private/versions/{new}", headers=auth(users.alice))).status_code == 404
    listed = await client.get("/v1/models/alice/private/versions", headers=auth(users.alice))
    assert [v["id"] for v in listed.json()["results"]] == [old]
    model = await client.get("/v1/models/alice/private", headers=auth(users.alice))
    assert model.json()["latest_version"]["id"] == old
    again = await _delete(client, users.alice, "alice/private", new)
    assert again.status_code == 404

    # in the background: rows and files
    await _until_gone(database, new)
    assert await _count(database, Prediction, Prediction.id == prediction_id) == 0
    assert await _count(database, StoredFile, StoredFile.prediction_id == prediction_id) == 0
    assert not await storage.exists(key)
    # the other version and its prediction are untouched
    assert await _count(database, Version, Version.id == old) == 1
    assert await _count(database, Prediction, Prediction.id == kept) == 1

    # once the last version is gone, the model can be deleted
    assert (await _delete(client, users.alice, "alice/private", old)).status_code == 202
    await _until_gone(database, old)
    model = await client.get("/v1/models/alice/private", headers=auth(users.alice))
    assert model.json()["latest_version"] is None
    assert (await client.delete("/v1/models/alice/private", headers=auth(users.alice))).status_code == 204


async def test_delete_version_rules(client: httpx.AsyncClient, users: Users, database: Database) -> None:
    await create_model(client, users.alice, "alice/shared")
    vid = await add_version(database, "alice/shared")
    run_by_bob = await add_version(database, "alice/shared")
    await add_prediction(database, "alice/shared", run_by_bob, "bob")

    # public model: nobody can delete its versions; for bob it is not even his model
    public = await _delete(client, users.alice, "alice/shared", vid)
    assert public.status_code == 409
    assert "private" in public.json()["detail"]
    foreign = await _delete(client, users.bob, "alice/shared", vid)
    assert foreign.status_code == 403

    await _set_visibility(database, "shared", "private")
    # now private: bob cannot see it at all
    hidden = await _delete(client, users.bob, "alice/shared", vid)
    assert hidden.status_code == 404
    # someone other than the owner has run this one
    refused = await _delete(client, users.alice, "alice/shared", run_by_bob)
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "other than the owner" in refused.json()["detail"]
    assert await _count(database, Version, Version.id == run_by_bob, Version.deleting.is_(False)) == 1

    accepted = await _delete(client, users.alice, "alice/shared", vid)
    assert accepted.status_code == 202
    await _until_gone(database, vid)


async def test_org_members_count_as_the_owner(client: httpx.AsyncClient, users: Users, database: Database) -> None:
    await create_model(client, users.alice, "acme/tool", visibility="private")
    vid = await add_version(database, "acme/tool")
    await add_prediction(database, "acme/tool", vid, "alice")
    response = await _delete(client, users.alice, "acme/tool", vid)
    assert response.status_code == 202
    await _until_gone(database, vid)


async def test_base_of_a_training_cannot_be_deleted(
    client: httpx.AsyncClient, users: Users, database: Database
) -> None:
    await create_model(client, users.alice, "alice/base", visibility="private")
    await create_model(client, users.alice, "alice/tuned", visibility="private")
    base = await add_version(database, "alice/base")
    tuned = await add_version(database, "alice/tuned")
    async with database.session() as session:
        base_pk = await session.scalar(select(Version.pk).where(Version.id == base))
        await session.execute(update(Version).where(Version.id == tuned).values(base_version_pk=base_pk))

    refused = await _delete(client, users.alice, "alice/base", base)
    assert refused.status_code == 409
    assert "training" in refused.json()["detail"]
    # the trained version itself can go, and then the base can too
    assert (await _delete(client, users.alice, "alice/tuned", tuned)).status_code == 202
    await _until_gone(database, tuned)
    assert (await _delete(client, users.alice, "alice/base", base)).status_code == 202
    await _until_gone(database, base)
