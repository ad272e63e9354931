"""Webhooks received by a real HTTP receiver: bodies as GET shows them, Standard Webhooks signatures (checked
with the ``standardwebhooks`` package and with the official client's ``replicate.webhooks.validate``), the
events filter, throttling of output and logs, no redirects, and URL validation."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import httpx
import pytest
import standardwebhooks
from replicate.webhook import Webhooks, WebhookSigningSecret

from cogport.webhooks.sender import THROTTLE
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.models import push_fixture
from tests.support.predictions import create, get, wait_for
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.support.webhooks import Delivery, Receiver, delivery_row

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def tokens(live_server: LiveServer, tmp_path: Path) -> str:
    return push_fixture(live_server, tmp_path, "tokens")


def secret(server: LiveServer) -> str:
    response = httpx.get(f"{server.url}/v1/webhooks/default/secret", headers=AUTH)
    assert response.status_code == 200
    key: str = response.json()["key"]
    assert key.startswith("whsec_")
    return key


def assert_signed(delivery: Delivery, key: str) -> None:
    """Both verifiers accept it: the reference implementation and the official client's helper."""
    assert standardwebhooks.Webhook(key).verify(delivery.body, delivery.headers) == delivery.json
    Webhooks.validate(headers=delivery.headers, body=delivery.body, secret=WebhookSigningSecret(key=key), tolerance=300)
    assert delivery.headers["webhook-id"].startswith("msg_")
    assert delivery.headers["content-type"] == "application/json"


def test_bodies_are_the_prediction_as_get_shows_it(live_server: LiveServer, tokens: str, receiver: Receiver) -> None:
    key = secret(live_server)
    gate = live_server.settings.data_dir / "gate"
    created = create(live_server, tokens, {"count": 3, "gate": str(gate)}, webhook=receiver.url)
    assert created["webhook"] == receiver.url
    assert created["webhook_events_filter"] == ["start", "output", "logs", "completed"]

    # While the model waits at the gate, the latest webhook carries what GET shows at that moment.
    def caught_up(deliveries: list[Delivery]) -> bool:
        return any(d.json.get("output") == ["token0 "] and d.json.get("logs") == "line 0\n" for d in deliveries)

    receiver.wait(caught_up)
    paused = get(live_server, created["id"])
    assert paused["status"] == "processing"
    assert receiver.deliveries[-1].json == paused

    gate.write_text("go")
    deliveries = receiver.wait_terminal()
    final = wait_for(live_server, created["id"], {"succeeded"})
    terminal = [d for d in deliveries if d.status == "succeeded"]
    assert len(terminal) == 1 and terminal[0].json == final
    running = [d for d in deliveries if d.status == "processing"]
    assert running and deliveries[0] in running  # start, then output/logs, all before the end
    assert all(d.json["id"] == created["id"] and d.json["started_at"] == final["started_at"] for d in running)
    for delivery in deliveries:
        assert_signed(delivery, key)
        assert delivery.path == "/hook"
    assert len({d.headers["webhook-id"] for d in deliveries}) == len(deliveries)  # a new id per message


def test_a_tampered_body_fails_both_verifiers(live_server: LiveServer, tokens: str, receiver: Receiver) -> None:
    key = secret(live_server)
    create(live_server, tokens, {"count": 1}, webhook=receiver.url, webhook_events_filter=["completed"])
    delivery = receiver.wait_terminal()[0]
    assert_signed(delivery, key)
    tampered = delivery.body.replace('"succeeded"', '"failed"')
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(key).verify(tampered, delivery.headers)
    with pytest.raises(ValueError, match="invalid"):
        Webhooks.validate(headers=delivery.headers, body=tampered, secret=WebhookSigningSecret(key=key))


@pytest.mark.parametrize(
    ("events", "expect_start"),
    [(["completed"], False), (["start", "completed"], True)],
)
def test_events_filter_is_respected(
    live_server: LiveServer, tokens: str, receiver: Receiver, events: list[str], expect_start: bool
) -> None:
    created = create(
        live_server, tokens, {"count": 5, "delay": 0.05}, webhook=receiver.url, webhook_events_filter=events
    )
    assert created["webhook_events_filter"] == events
    deliveries = receiver.wait_terminal()
    final = wait_for(live_server, created["id"], {"succeeded"})
    # Nothing more is coming: the terminal one was the last (intermediate ones are sent at once).
    statuses = [d.status for d in deliveries]
    assert statuses.count("succeeded") == 1
    assert statuses == (["processing", "succeeded"] if expect_start else ["succeeded"])
    assert deliveries[-1].json == final


def test_webhook_completed_only(live_server: LiveServer, tokens: str, receiver: Receiver) -> None:
    created = create(live_server, tokens, {"count": 2}, webhook_completed=receiver.url)
    assert created["webhook_events_filter"] == ["completed"]
    deliveries = receiver.wait_terminal()
    assert [d.status for d in deliveries] == ["succeeded"]


@pytest.mark.parametrize("kind", ["output", "logs"])
def test_output_and_logs_are_throttled(live_server: LiveServer, tokens: str, receiver: Receiver, kind: str) -> None:
    """40 tokens (and 40 log lines) over about a second: a handful of webhooks, at least ~500 ms apart;
    start and completed are always sent."""
    created = create(
        live_server,
        tokens,
        {"count": 40, "delay": 0.025},
        webhook=receiver.url,
        webhook_events_filter=["start", kind, "completed"],
    )
    deliveries = receiver.wait_terminal()
    final = wait_for(live_server, created["id"], {"succeeded"})
    assert deliveries[-1].json == final and [d.status for d in deliveries].count("succeeded") == 1
    # The start and the throttled ones; which is the start a receiver cannot tell (it comes with the first
    # token, so at most one pair of them may be close together).
    running = [d for d in deliveries if d.status == "processing"]
    assert 2 <= len(running) <= 7, [d.json.get(kind) for d in running]
    arrivals = sorted(d.received for d in running)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # Generous (arrival times on a loaded box bunch up when one send is late): the start may come with the
    # first token, and one late delivery may land next to the one after it; a broken throttle sends ~40.
    assert sum(gap < THROTTLE * 0.6 for gap in gaps) <= 2, gaps
    field = "output" if kind == "output" else "logs"
    assert all(len(d.json[field] or "") <= len(final[field]) for d in running)
    assert any(d.json[field] for d in running)


def test_redirects_are_not_followed(live_server: LiveServer, tokens: str) -> None:
    target = Receiver()
    target.start()
    redirecting = Receiver(lambda _: (307, {"Location": target.url}))
    redirecting.start()
    try:
        created = create(live_server, tokens, {"count": 1}, webhook=redirecting.url)
        wait_for(live_server, created["id"], {"succeeded"})
        row = delivery_row(live_server.settings, created["id"], until=lambda d: d.status != "pending")
        assert row.status == "failed" and row.attempts == 1 and "307" in (row.last_error or "")
        assert {d.status for d in redirecting.deliveries} <= {"processing", "succeeded"}
        assert [d.status for d in redirecting.deliveries].count("succeeded") == 1  # a redirect is not retried
        assert target.deliveries == []
    finally:
        redirecting.stop()
        target.stop()


@pytest.mark.parametrize(
    "fields",
    [
        {"webhook": "ftp://example.com/hook"},
        {"webhook": "not a url"},
        {"webhook": "https://"},
        {"webhook_completed": "file:///etc/passwd"},
        {"webhook": "https://example.com/hook", "webhook_events_filter": ["start", "bogus"]},
    ],
)
def test_invalid_webhooks_are_refused(live_server: LiveServer, tokens: str, fields: dict[str, Any]) -> None:
    for path, body in (
        ("/v1/predictions", {"version": tokens}),
        ("/v1/models/admin/tokens/predictions", {}),
    ):
        response = httpx.post(f"{live_server.url}{path}", json={**body, "input": {}, **fields}, headers=AUTH)
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["detail"] and problem["status"] == 422
