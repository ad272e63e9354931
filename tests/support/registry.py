"""Test helpers for the registry: models over the API, versions and predictions through the data layer.

Versions are created by builds and trainings in production; tests create them with
:func:`cogport.ops.versions.create`, the same function those paths call.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.db.engine import Database
from cogport.db.tables import Account, Model, Prediction, StoredFile, utcnow
from cogport.identifiers import new_object_id
from cogport.ops import versions as version_ops

SCHEMA: dict[str, Any] = {
    "openapi": "3.0.2",
    "components": {
        "schemas": {
            "Input": {"type": "object", "properties": {"text": {"type": "string"}}},
            "Output": {"type": "string"},
        }
    },
}


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_model(
    client: httpx.AsyncClient, token: str, ref: str, *, visibility: str = "public", **fields: Any
) -> dict[str, Any]:
    owner, name = ref.split("/")
    body = {"owner": owner, "name": name, "visibility": visibility, "hardware": "cpu", **fields}
    response = await client.post("/v1/models", json=body, headers=auth(token))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def version_id(seed: str) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()


async def _model(session: AsyncSession, ref: str) -> Model:
    owner, name = ref.split("/")
    result = await session.execute(
        select(Model).join(Account, Account.id == Model.owner_id).where(Account.username == owner, Model.name == name)
    )
    return result.scalar_one()


async def add_version(database: Database, ref: str, seed: str | None = None) -> str:
    """Push a version to ``ref`` through the data layer; returns its 64-hex id."""
    vid = version_id(seed or f"{ref}:{new_object_id()}")
    async with database.session() as session:
        model = await _model(session, ref)
        await version_ops.create(session, model, vid, cog_version="0.23.1", openapi_schema=SCHEMA)
    return vid


async def add_prediction(
    database: Database, ref: str, vid: str, username: str, *, output_key: str | None = None
) -> str:
    """Record a finished prediction of ``ref:vid`` run by ``username`` (optionally with one output file)."""
    async with database.session() as session:
        model = await _model(session, ref)
        version = await version_ops.get(session, model, vid)
        runner = (await session.execute(select(Account).where(Account.username == username))).scalar_one()
        prediction = Prediction(
            id=new_object_id(),
            account_id=runner.id,
            model_id=model.id,
            version_pk=version.pk,
            model_ref=ref,
            version_ref=vid,
            input={"text": "hi"},
            output="hello",
            status="succeeded",
            created_at=utcnow(),
            completed_at=utcnow(),
        )
        session.add(prediction)
        await session.flush()
        if output_key is not None:
            session.add(
                StoredFile(
                    id=new_object_id(),
                    account_id=runner.id,
                    kind="output",
                    prediction_id=prediction.id,
                    name="out.txt",
                    content_type="text/plain",
                    size=5,
                    sha256=hashlib.sha256(b"hello").hexdigest(),
                    md5=hashlib.md5(b"hello").hexdigest(),
                    storage_key=output_key,
                    access_token=new_object_id(),
                    created_at=utcnow(),
                )
            )
        return prediction.id
