"""``GET /metrics``: Prometheus text that moves with real traffic, for the admin or the scrape token only."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cogport.settings import Settings
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.models import push_fixture
from tests.support.predictions import create
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
SCRAPE_TOKEN = "scrape-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.metrics.token = SCRAPE_TOKEN
    return settings


def scrape(server: LiveServer, token: str = SCRAPE_TOKEN) -> Samples:
    response = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def matching(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that have (at least) ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_metrics_move_with_predictions_and_requests(live_server: LiveServer, tmp_path: Path) -> None:
    version = push_fixture(live_server, tmp_path, "noop")
    before = scrape(live_server)
    for _ in range(2):
        done = create(live_server, version, {}, headers={"Prefer": "wait=60"})
        assert done["status"] == "succeeded"
    queued = create(live_server, version, {}, headers={"Prefer": "wait=60"})
    missing = httpx.get(f"{live_server.url}/v1/predictions/doesnotexist", headers=AUTH)
    assert missing.status_code == 404
    httpx.get(f"{live_server.url}/no/such/path/secret-token-in-path", headers=AUTH)
    after = scrape(live_server)

    labels = {"model": "admin/noop", "deployment": "", "status": "succeeded", "source": "api"}
    grew = value(after, "cogport_predictions_total", **labels) - value(before, "cogport_predictions_total", **labels)
    assert grew == (3 if queued["status"] == "succeeded" else 2)
    for phase in ("queue", "predict", "total"):
        name = "cogport_prediction_duration_seconds_count"
        assert value(after, name, phase=phase) - value(before, name, phase=phase) >= 2
    assert value(after, "cogport_prediction_duration_seconds_count", phase="setup") >= 1
    assert value(after, "cogport_instance_cold_start_seconds_count") >= 1
    # one noop instance, idle (or still busy with the last one)
    assert matching(after, "cogport_instances", hardware="cpu") == 1

    created = {"route": "/v1/predictions", "method": "POST", "status": "201"}
    assert (
        value(after, "cogport_http_requests_total", **created) - value(before, "cogport_http_requests_total", **created)
        >= 2
    )
    by_id = {"route": "/v1/predictions/{prediction_id}", "method": "GET", "status": "404"}
    assert value(after, "cogport_http_requests_total", **by_id) == 1
    assert value(after, "cogport_http_requests_total", route="unmatched", method="GET", status="404") == 1
    durations = "cogport_http_request_duration_seconds_count"
    assert value(after, durations, route="/v1/predictions", method="POST") >= 3
    # no ids, tokens or raw paths in any label
    text = httpx.get(f"{live_server.url}/metrics", headers=AUTH).text
    for secret in (done["id"], "doesnotexist", "secret-token-in-path", ADMIN_TOKEN, SCRAPE_TOKEN, version):
        assert secret not in text


def test_queue_depth_counts_waiting_runs(live_server: LiveServer, tmp_path: Path) -> None:
    version = push_fixture(live_server, tmp_path, "slow")
    marker = tmp_path / "marker"
    first = create(live_server, version, {"seconds": 30, "marker": str(marker)})
    waiting = [create(live_server, version, {"seconds": 0.01}) for _ in range(2)]
    depth = value(scrape(live_server), "cogport_queue_depth", model="admin/slow", deployment="")
    assert 2 <= depth <= 3  # the first may still be waiting for its instance
    for prediction in (first, *waiting):
        httpx.post(f"{live_server.url}/v1/predictions/{prediction['id']}/cancel", headers=AUTH)


def test_metrics_need_the_admin_or_the_scrape_token(live_server: LiveServer) -> None:
    url = f"{live_server.url}/metrics"
    anonymous = httpx.get(url)
    assert anonymous.status_code == 401
    assert anonymous.json()["status"] == 401
    wrong = httpx.get(url, headers={"Authorization": "Bearer not-a-token-at-all"})
    assert wrong.status_code == 401
    response = httpx.post(f"{live_server.url}/admin/v1/accounts", json={"username": "carol"}, headers=AUTH)
    assert response.status_code == 201, response.text
    token = httpx.post(f"{live_server.url}/admin/v1/accounts/carol/tokens", json={}, headers=AUTH).json()["token"]
    user = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
    assert user.status_code == 403
    assert user.headers["content-type"].startswith("application/problem+json")
    assert httpx.get(url, headers=AUTH).status_code == 200
    assert httpx.get(url, headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}).status_code == 200
    # the scrape token opens nothing else
    assert (
        httpx.get(f"{live_server.url}/v1/account", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"}).status_code
        == 401
    )


async def test_metrics_can_be_switched_off(settings: Settings) -> None:
    from cogport.app import create_app

    settings.metrics.enabled = False
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=AUTH) as client:
            assert (await client.get("/metrics")).status_code == 404
            assert (await client.get("/v1/account")).status_code == 200
