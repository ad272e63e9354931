"""The status writer and the group writer, on the real database: announcements ride on the transaction
that makes them true (the terminal webhook's row with the terminal status, or neither), hooks run once
and in order, concurrent writes share commits, and one failing write fails alone."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from cogport.core.status import Status
from cogport.db.engine import Database
from cogport.db.tables import Prediction, WebhookDelivery
from cogport.db.writer import GroupWriter, Tx
from cogport.errors import PredictionNotFound
from cogport.lifecycle.status import Announcement, Transitions
from cogport.settings import WebhookSettings
from cogport.webhooks.sender import retry_delay
from tests.support.accounts import Users
from tests.support.registry import add_version, create_model

HOOK = "https://example.com/hook"


class Crash(Exception):
    """Stands for the process dying between the terminal write and its commit."""


async def queued(app: FastAPI, client: httpx.AsyncClient, users: Users, **body: Any) -> str:
    """A queued prediction of alice's model (the dispatcher is stopped, so it stays queued)."""
    dispatcher = app.state.services.get("dispatcher")
    await dispatcher.stop()
    await create_model(client, users.alice, "alice/m", visibility="private")
    vid = await add_version(app.state.database, "alice/m")
    response = await client.post(
        "/v1/predictions",
        json={"version": vid, "input": {"text": "hi"}, **body},
        headers={"Authorization": f"Bearer {users.alice}"},
    )
    assert response.status_code == 201, response.text
    prediction_id: str = response.json()["id"]
    return prediction_id


async def state(database: Database, prediction_id: str) -> tuple[str, int]:
    async with database.session() as session:
        row = await session.get(Prediction, prediction_id)
        assert row is not None
        deliveries = await session.scalar(
            select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.prediction_id == prediction_id)
        )
    return row.status, int(deliveries or 0)


async def test_the_terminal_webhook_row_commits_with_the_terminal_status_or_not_at_all(
    app: FastAPI, client: httpx.AsyncClient, users: Users
) -> None:
    prediction_id = await queued(app, client, users, webhook=HOOK)
    database: Database = app.state.database
    transitions: Transitions = app.state.transitions
    writer: GroupWriter = app.state.writer

    def crashing(tx: Tx) -> None:
        _, changed = transitions.transition(tx, prediction_id, Status.FAILED, error="boom")
        assert changed
        raise Crash

    with pytest.raises(Crash):
        await writer.run(crashing)
    assert await state(database, prediction_id) == ("starting", 0)  # neither the status nor the webhook
    await writer.run(lambda tx: transitions.transition(tx, prediction_id, Status.FAILED, error="boom"))
    assert await state(database, prediction_id) == ("failed", 1)  # both, in one commit


async def test_an_error_in_a_hook_rolls_the_change_back_and_reaches_the_caller(
    app: FastAPI, client: httpx.AsyncClient, users: Users
) -> None:
    prediction_id = await queued(app, client, users)
    database: Database = app.state.database
    transitions: Transitions = app.state.transitions
    heard: list[Announcement] = []
    transitions.after_commit(heard.append)

    def broken(_tx: Tx, announcement: Announcement) -> None:
        if announcement.prediction.id == prediction_id and announcement.kind == "completed":
            raise RuntimeError("the webhook queue is unreachable")

    transitions.within(broken)
    with pytest.raises(RuntimeError, match="unreachable"):
        await app.state.writer.run(lambda tx: transitions.transition(tx, prediction_id, Status.CANCELED))
    assert await state(database, prediction_id) == ("starting", 0)
    assert heard == []  # nothing announced for a change that did not happen


async def test_after_commit_hooks_hear_each_change_once_with_the_row_after_it(
    app: FastAPI, client: httpx.AsyncClient, users: Users
) -> None:
    prediction_id = await queued(app, client, users)
    database: Database = app.state.database
    transitions: Transitions = app.state.transitions
    heard: list[tuple[str, str, str | None]] = []
    transitions.after_commit(lambda a: heard.append((a.kind, a.prediction.status, a.previous)))
    writer: GroupWriter = app.state.writer

    def start(tx: Tx) -> Prediction:
        row, changed = transitions.transition(tx, prediction_id, Status.PROCESSING)
        assert changed and heard == []  # not before the commit
        return row

    row = await writer.run(start)
    assert heard == [("start", "processing", "starting")]
    assert await writer.run(lambda tx: transitions.progress(tx, row, {"logs": "one\n"}, ["logs"]))
    await writer.run(lambda tx: transitions.transition(tx, row, Status.SUCCEEDED, output="ok"))
    # A late write after the end: not allowed, nothing written, nothing heard.
    _, changed = await writer.run(lambda tx: transitions.transition(tx, prediction_id, Status.FAILED))
    assert not changed
    assert not await writer.run(lambda tx: transitions.progress(tx, row, {"logs": "late\n"}, ["logs"]))
    assert heard == [
        ("start", "processing", "starting"),
        ("logs", "processing", None),
        ("completed", "succeeded", "processing"),
    ]
    async with database.session() as session:
        stored = await session.get(Prediction, prediction_id)
        assert stored is not None
        assert (stored.status, stored.output, stored.logs) == ("succeeded", "ok", "one\n")


async def test_a_held_row_that_changed_meanwhile_is_read_again(
    app: FastAPI, client: httpx.AsyncClient, users: Users
) -> None:
    """The compare-and-set: a row held since before another writer canceled it is not overwritten."""
    prediction_id = await queued(app, client, users)
    database: Database = app.state.database
    transitions: Transitions = app.state.transitions
    async with database.session() as session:
        held = await session.get(Prediction, prediction_id)
    assert held is not None and held.status == "starting"
    writer: GroupWriter = app.state.writer
    await writer.run(lambda tx: transitions.transition(tx, prediction_id, Status.CANCELED))
    row, changed = await writer.run(lambda tx: transitions.transition(tx, held, Status.SUCCEEDED, output="late"))
    assert not changed and row.status == "canceled" and row.output is None


async def test_concurrent_writes_share_commits_and_a_failing_one_fails_alone(
    app: FastAPI, client: httpx.AsyncClient, users: Users
) -> None:
    prediction_id = await queued(app, client, users)
    database: Database = app.state.database
    transitions = Transitions()
    writer = GroupWriter(database)
    await writer.start()
    try:
        ids = [prediction_id] + [await queued_again(client, users) for _ in range(30)]

        async def cancel(pid: str) -> bool:
            _, changed = await writer.run(lambda tx: transitions.transition(tx, pid, Status.CANCELED))
            return changed

        async def missing() -> None:
            await writer.run(lambda tx: transitions.transition(tx, "nosuchprediction", Status.CANCELED))

        first, rest = ids[:20], ids[20:]
        assert await asyncio.gather(*(cancel(pid) for pid in first)) == [True] * len(first)
        assert writer.operations == len(first) and writer.batches < len(first)  # commits were shared
        # A batch with a failing write: that one fails, the others are written all the same.
        results = await asyncio.gather(*(cancel(pid) for pid in rest), missing(), return_exceptions=True)
        assert results[:-1] == [True] * len(rest)
        assert isinstance(results[-1], PredictionNotFound)
        for pid in ids:
            assert (await state(database, pid))[0] == "canceled"
    finally:
        await writer.stop()


async def queued_again(client: httpx.AsyncClient, users: Users) -> str:
    page = await client.get("/v1/models/alice/m", headers={"Authorization": f"Bearer {users.alice}"})
    vid = page.json()["latest_version"]["id"]
    response = await client.post(
        "/v1/predictions",
        json={"version": vid, "input": {"text": "hi"}},
        headers={"Authorization": f"Bearer {users.alice}"},
    )
    assert response.status_code == 201, response.text
    prediction_id: str = response.json()["id"]
    return prediction_id


def test_terminal_webhooks_are_retried_for_an_hour_by_default() -> None:
    settings = WebhookSettings()
    delays, age, attempt = [], 0.0, 1
    while (delay := retry_delay(settings, attempt, age)) is not None:
        delays.append(delay)
        age += delay
        attempt += 1
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0] and max(delays) == 300.0
    assert 3300 <= age <= 3600  # the last retry comes within the hour, and later ones would not
    assert retry_delay(WebhookSettings(retry_for=60), 1, 0.0) == 1.0
    assert retry_delay(WebhookSettings(retry_for=60), 7, 63.0) is None
