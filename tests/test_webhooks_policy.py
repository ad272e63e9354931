"""Webhook targets: private networks refused by default (every spelling), allow/deny lists, checked at
create time (422) and again at send time."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from cogport.netpolicy import HostPolicy
from cogport.settings import Settings, WebhookSettings
from cogport.webhooks.sender import post
from tests.support.webhooks import Receiver

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
LOCAL = [
    "http://127.0.0.1:8000/hook",
    "http://127.1/hook",
    "http://0x7f.1/hook",
    "http://2130706433/hook",
    "http://0177.0.0.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:7f00:1]/hook",
    "http://169.254.169.254/latest/meta-data",
    "http://[fe80::1]/hook",
    "http://10.1.2.3/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.1/hook",
    "http://100.64.0.1/hook",
    "http://[fd00::1]/hook",
    "http://0.0.0.0/hook",
    "http://[::]/hook",
    "http://localhost:8000/hook",
    "https://LOCALHOST./hook",
    "http://api.localhost/hook",
]


@pytest.mark.parametrize("url", LOCAL)
async def test_default_refuses_private_and_local_addresses(url: str) -> None:
    refusal = await HostPolicy().check(url)
    assert refusal is not None and not refusal.retry
    assert "ALLOW_PRIVATE_NETWORKS" in refusal.reason
    allowed = await HostPolicy(allow_private_networks=True).check(url)
    assert allowed is None or ("api.localhost" in url and allowed.retry)  # that name may not resolve here


async def test_public_addresses_pass_and_lists_decide() -> None:
    assert await HostPolicy().check("https://8.8.8.8/hook") is None
    assert await HostPolicy().check("http://[2001:4860:4860::8888]/hook") is None
    denied = HostPolicy.of(True, [], ["8.8.0.0/16", ".internal.example"])
    assert (await denied.check("https://8.8.8.8/hook")) is not None
    assert await denied.check("https://9.9.9.9/hook") is None
    allowed = HostPolicy.of(False, ["10.1.2.3", "1.1.1.0/24"], [])
    assert await allowed.check("http://10.1.2.3/hook") is None  # an allowed entry may be private
    assert await allowed.check("http://1.1.1.1/hook") is None
    refusal = await allowed.check("https://8.8.8.8/hook")
    assert refusal is not None and "ALLOWED_HOSTS" in refusal.reason
    deny_wins = HostPolicy.of(True, ["10.0.0.0/8"], ["10.1.2.3"])
    assert await deny_wins.check("http://10.1.2.3/hook") is not None
    assert await deny_wins.check("http://10.1.2.4/hook") is None
    unresolvable = await HostPolicy().check("http://does-not-exist.invalid/hook")
    assert unresolvable is not None and unresolvable.retry
    assert await HostPolicy().check("ftp://8.8.8.8/") is not None


async def test_send_time_check_refuses_without_posting() -> None:
    receiver = Receiver()
    receiver.start()
    try:
        async with httpx.AsyncClient() as client:
            failure = await post(client, HostPolicy(), receiver.url, SECRET, "msg_1", "{}")
            assert failure is not None and not failure.retry and "refused" in failure.reason
            assert receiver.deliveries == []
            assert (
                await post(client, HostPolicy(allow_private_networks=True), receiver.url, SECRET, "msg_2", "{}") is None
            )
            assert len(receiver.deliveries) == 1
    finally:
        receiver.stop()


@pytest.fixture
def default_webhooks(settings: Settings) -> Iterator[None]:
    """The default policy (the suite's settings allow private networks for its receivers)."""
    settings.webhooks = WebhookSettings()
    yield


@pytest.mark.usefixtures("default_webhooks")
async def test_create_refuses_a_loopback_webhook_by_default(client: httpx.AsyncClient) -> None:
    for field in ("webhook", "webhook_completed"):
        body = {"version": "0" * 64, "input": {}, field: "http://127.1:8000/hook"}
        response = await client.post("/v1/predictions", json=body)
        assert response.status_code == 422, response.text
        problem = response.json()
        assert [entry["field"] for entry in problem["invalid_fields"]] == [field]
        assert "refused" in problem["detail"] and "ALLOW_PRIVATE_NETWORKS" in problem["detail"]
    for path in ("/v1/models/admin/m/predictions", "/v1/deployments/admin/d/predictions"):
        response = await client.post(path, json={"input": {}, "webhook": "http://[::ffff:127.0.0.1]/hook"})
        assert response.status_code == 422, (path, response.text)
    # a public target passes the check and fails later, for its unknown version
    response = await client.post(
        "/v1/predictions", json={"version": "0" * 64, "input": {}, "webhook": "https://8.8.8.8/hook"}
    )
    assert response.status_code == 422 and "version" in response.json()["detail"].lower()
