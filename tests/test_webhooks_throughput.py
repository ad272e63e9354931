"""Terminal webhooks keep pace (issue 19): a receiver that never answers holds only its own target's slots
while another target gets all of its webhooks, and hundreds of terminal webhooks, delivered by two app
instances sharing the database, each arrive exactly once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from cogport.app import create_app
from cogport.db.tables import Account, WebhookDelivery
from cogport.db.writer import Tx
from cogport.ops import webhooks as delivery_ops
from cogport.settings import Settings, WebhookSettings
from cogport.webhooks import signing
from tests.support.models import push_fixture
from tests.support.predictions import create
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.support.servers import running
from tests.support.webhooks import HangingReceiver, Receiver

pytestmark = pytest.mark.usefixtures("shared_build_dirs")


def test_a_hung_receiver_does_not_hold_up_another(settings: Settings, tmp_path: Path) -> None:
    # Attempts may wait long (the hung receiver is never given up on during the test); two slots per target.
    settings = settings.model_copy(
        update={"webhooks": WebhookSettings(allow_private_networks=True, timeout=600, target_concurrency=2)}
    )
    hung, fast = HangingReceiver(), Receiver()
    fast.start()
    try:
        with running(settings) as server:
            tokens = push_fixture(server, tmp_path, "tokens")
            only_completed = {"webhook_events_filter": ["completed"]}
            for _ in range(4):  # more than its slots: two wait for a slot, none is answered
                create(server, tokens, {"count": 1}, webhook=hung.url, **only_completed)
            hung.wait(lambda r: r.requests >= 2)
            ids = [create(server, tokens, {"count": 1}, webhook=fast.url, **only_completed)["id"] for _ in range(12)]
            deliveries = fast.wait_terminal(len(ids))
            # Every one of them came while the hung receiver still held its requests, none given up on.
            assert hung.abandoned == 0 and hung.requests == 2
            assert sorted(d.json["id"] for d in deliveries) == sorted(ids)
    finally:
        hung.stop()
        fast.stop()


@asynccontextmanager
async def app_of(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


async def test_hundreds_of_terminal_webhooks_each_delivered_once(settings: Settings) -> None:
    receiver = Receiver()
    receiver.start()
    count = 400
    try:
        async with AsyncExitStack() as stack:
            # Two app instances on one database, as two API processes: both deliver, neither twice.
            first = await stack.enter_async_context(app_of(settings))
            second = await stack.enter_async_context(app_of(settings))
            async with first.state.database.session() as session:
                account_id = (await session.execute(select(Account.id).limit(1))).scalar_one()

            async def queue(start: int, app: FastAPI) -> None:
                def operation(tx: Tx) -> None:
                    for n in range(start, start + 50):
                        delivery_ops.enqueue(
                            tx,
                            prediction_id=f"p{n:05d}",
                            account_id=account_id,
                            url=receiver.url,
                            body=json.dumps({"id": f"p{n:05d}", "status": "succeeded"}),
                            message_id=signing.new_message_id(),
                        )
                    tx.on_commit(lambda: app.state.services.wake("webhooks"))

                await app.state.writer.run(operation)

            apps = (first, second)
            await asyncio.gather(*(queue(start, apps[start // 50 % 2]) for start in range(0, count, 50)))
            await asyncio.to_thread(receiver.wait_terminal, count, 120)

            async def settled() -> bool:
                async with first.state.database.session() as session:
                    query = select(func.count()).where(WebhookDelivery.status != "delivered")
                    return (await session.execute(query)).scalar_one() == 0

            for _ in range(1200):  # the receiver has them all: their outcomes are being written
                if await settled():
                    break
                await asyncio.sleep(0.05)
            async with first.state.database.session() as session:
                rows = (await session.execute(select(WebhookDelivery))).scalars().all()
    finally:
        receiver.stop()
    ids = Counter(d.headers["webhook-id"] for d in receiver.deliveries)
    assert len(ids) == count and set(ids.values()) == {1}
    assert {row.message_id for row in rows} == set(ids)
    # Each arrived once; an attempt the receiver refused (a connection it could not take) was retried.
    assert {row.status for row in rows} == {"delivered"}
