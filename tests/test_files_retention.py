"""Retention: finished predictions lose their data after ``data_retention_hours``; expired files go away."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, update

from cogport.api import presenters
from cogport.db.engine import Database
from cogport.db.tables import Account, Prediction, StoredFile, utcnow
from cogport.db.writer import run_in
from cogport.files.tokens import UploadTokens
from cogport.ops import files as file_ops
from cogport.services.retention import RetentionService
from cogport.settings import Settings
from tests.support.accounts import Users
from tests.support.registry import add_prediction, add_version, auth, create_model


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.data_retention_hours = 1
    return settings


def service(app: FastAPI) -> RetentionService:
    found = app.state.services.get("retention")
    assert isinstance(found, RetentionService)
    return found


@pytest.fixture
async def model(client: httpx.AsyncClient, users: Users) -> str:
    await create_model(client, users.alice, "alice/m")
    return "alice/m"


async def finished_prediction(
    client: httpx.AsyncClient, app: FastAPI, database: Database, hours_ago: float, status: str = "succeeded"
) -> tuple[str, str]:
    """A prediction of alice's ``alice/m`` that finished ``hours_ago``, with a linked output file: (id, URL)."""
    vid = await add_version(database, "alice/m")
    prediction_id = await add_prediction(database, "alice/m", vid, "alice")
    tokens: UploadTokens = app.state.upload_tokens
    url = (await client.put(f"/internal/uploads/{tokens.issue()}/o.txt", content=b"out")).headers["location"]
    when = utcnow() - timedelta(hours=hours_ago)
    async with database.session() as session:
        alice = (await session.execute(select(Account).where(Account.username == "alice"))).scalar_one()
        await run_in(session, lambda tx: file_ops.link_outputs(tx, prediction_id, alice.id, [url]))
        await session.execute(
            update(Prediction)
            .where(Prediction.id == prediction_id)
            .values(status=status, created_at=when, completed_at=when, output=[url], logs="some logs")
        )
    return prediction_id, url


async def get_prediction(database: Database, prediction_id: str) -> Prediction:
    async with database.session() as session:
        row = await session.get(Prediction, prediction_id)
        assert row is not None
        return row


async def test_old_predictions_lose_their_data(
    client: httpx.AsyncClient, app: FastAPI, database: Database, model: str
) -> None:
    old, old_url = await finished_prediction(client, app, database, hours_ago=2)
    failed, _ = await finished_prediction(client, app, database, hours_ago=3, status="failed")
    recent, recent_url = await finished_prediction(client, app, database, hours_ago=0.5)
    running, running_url = await finished_prediction(client, app, database, hours_ago=5, status="processing")

    await service(app).run_once()

    for prediction_id in (old, failed):
        row = await get_prediction(database, prediction_id)
        assert (row.data_removed, row.output, row.input, row.logs) == (True, None, {}, "")
        body = presenters.prediction(row, "http://testserver")
        assert "output" in body and body["output"] is None and body["data_removed"] is True
    assert (await client.get("/" + old_url.split("/", 3)[3])).status_code == 404
    for prediction_id, url in ((recent, recent_url), (running, running_url)):
        row = await get_prediction(database, prediction_id)
        assert row.data_removed is False and row.output == [url] and row.logs == "some logs"
        assert (await client.get("/" + url.split("/", 3)[3])).status_code == 200


async def test_retention_off_keeps_everything(
    client: httpx.AsyncClient, app: FastAPI, database: Database, settings: Settings, model: str
) -> None:
    settings.data_retention_hours = None
    old, _ = await finished_prediction(client, app, database, hours_ago=1000)
    await service(app).run_once()
    assert (await get_prediction(database, old)).data_removed is False


async def test_expired_uploads_and_orphan_outputs_are_removed(
    client: httpx.AsyncClient, app: FastAPI, database: Database, users: Users, settings: Settings
) -> None:
    files: dict[str, Any] = {}
    for name in ("expired", "fresh"):
        response = await client.post("/v1/files", files={"content": (name, b"x")}, headers=auth(users.alice))
        files[name] = response.json()["id"]
    tokens: UploadTokens = app.state.upload_tokens
    orphan = (await client.put(f"/internal/uploads/{tokens.issue()}/o.txt", content=b"o")).headers["location"]
    young_orphan = (await client.put(f"/internal/uploads/{tokens.issue()}/p.txt", content=b"p")).headers["location"]
    past = utcnow() - timedelta(seconds=1)
    async with database.session() as session:
        await session.execute(update(StoredFile).where(StoredFile.id == files["expired"]).values(expires_at=past))
        orphan_id = orphan.split("/")[-3]
        await session.execute(update(StoredFile).where(StoredFile.id == orphan_id).values(expires_at=past))

    await service(app).run_once()

    assert (await client.get(f"/v1/files/{files['expired']}", headers=auth(users.alice))).status_code == 404
    assert (await client.get(f"/v1/files/{files['fresh']}", headers=auth(users.alice))).status_code == 200
    assert (await client.get("/" + orphan.split("/", 3)[3])).status_code == 404
    assert (await client.get("/" + young_orphan.split("/", 3)[3])).status_code == 200
    assert not (settings.data_dir / "files" / "uploads" / files["expired"]).exists()
    assert not (settings.data_dir / "files" / "outputs" / orphan_id).exists()
