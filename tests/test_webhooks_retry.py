"""Terminal webhooks are retried (backoff 1, 2, 4, ... s) with the same ``webhook-id`` until the receiver takes
them, also across a server restart; intermediate ones are never retried."""

from __future__ import annotations

from pathlib import Path

import pytest
import standardwebhooks

from cogport.settings import Settings
from tests.conftest import LiveServer
from tests.support.models import push_fixture
from tests.support.predictions import create, wait_for
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.support.servers import running
from tests.support.webhooks import Receiver, delivery_row
from tests.test_webhooks_delivery import secret

pytestmark = pytest.mark.usefixtures("shared_build_dirs")


def test_terminal_webhook_retried_with_the_same_id(live_server: LiveServer, tmp_path: Path) -> None:
    tokens = push_fixture(live_server, tmp_path, "tokens")
    key = secret(live_server)
    receiver = Receiver(lambda n: (500, {}) if n < 3 else (200, {}))
    receiver.start()
    try:
        created = create(
            live_server,
            tokens,
            {"count": 3, "delay": 0.05},
            webhook=receiver.url,
            webhook_events_filter=["start", "completed"],
        )
        deliveries = receiver.wait(lambda ds: any(d.answered == 200 for d in ds))
        row = delivery_row(live_server.settings, created["id"], until=lambda d: d.status == "delivered")
    finally:
        receiver.stop()
    final = wait_for(live_server, created["id"], {"succeeded"})
    start, *terminal = deliveries
    assert start.status == "processing" and start.answered == 500  # the start is not retried
    assert [d.status for d in terminal] == ["succeeded"] * 3
    assert [d.answered for d in terminal] == [500, 500, 200]
    assert {d.headers["webhook-id"] for d in terminal} == {row.message_id}
    assert start.headers["webhook-id"] != row.message_id
    assert all(d.json == final for d in terminal)
    for delivery in deliveries:
        standardwebhooks.Webhook(key).verify(delivery.body, delivery.headers)
    assert row.attempts == 3 and row.last_error is None


def test_receiver_down_at_first_then_up(live_server: LiveServer, tmp_path: Path) -> None:
    tokens = push_fixture(live_server, tmp_path, "tokens")
    receiver = Receiver()  # its port is reserved, but nothing listens yet
    created = create(live_server, tokens, {"count": 1}, webhook=receiver.url)
    # The start webhook (connection refused) is lost; the terminal one keeps being retried.
    failed = delivery_row(live_server.settings, created["id"], until=lambda d: d.attempts >= 2)
    assert failed.status == "pending" and failed.last_error
    receiver.start()
    try:
        deliveries = receiver.wait_terminal()
    finally:
        receiver.stop()
    assert [d.status for d in deliveries] == ["succeeded"]
    assert deliveries[0].headers["webhook-id"] == failed.message_id
    row = delivery_row(live_server.settings, created["id"], until=lambda d: d.status == "delivered")
    assert row.attempts >= 3


def test_retries_survive_a_server_restart(settings: Settings, tmp_path: Path) -> None:
    receiver = Receiver()  # down while the first server runs
    with running(settings) as first:
        tokens = push_fixture(first, tmp_path, "tokens")
        created = create(first, tokens, {"count": 2}, webhook=receiver.url, webhook_events_filter=["completed"])
        wait_for(first, created["id"], {"succeeded"})
        failed = delivery_row(settings, created["id"], until=lambda d: d.attempts >= 1 and d.status == "pending")
    receiver.start()
    try:
        with running(settings) as second:
            deliveries = receiver.wait_terminal()
            final = wait_for(second, created["id"], {"succeeded"})
    finally:
        receiver.stop()
    assert len(deliveries) == 1
    assert deliveries[0].headers["webhook-id"] == failed.message_id
    body = deliveries[0].json
    assert body["id"] == created["id"] and body["status"] == "succeeded" and body["output"] == final["output"]
    row = delivery_row(settings, created["id"], until=lambda d: d.status == "delivered")
    assert row.attempts > failed.attempts
