"""Housekeeping runs while claims are made: a healthy run is never taken for a lost one. Many concurrent
sync predictions with a lease short enough that housekeeping runs every ~0.04 s (on the previous main a few in
every few hundred failed with "the server running it stopped")."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from cogport.settings import Settings
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.models import push_fixture
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    settings.lease_seconds = 0.12
    settings.runtime.max_instances_per_version = 2
    return settings


def test_concurrent_sync_runs_all_succeed_under_constant_housekeeping(live_server: LiveServer, tmp_path: Path) -> None:
    version = push_fixture(live_server, tmp_path, "noop")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Prefer": "wait"}

    def run(_: int) -> str:
        with httpx.Client(timeout=120) as client:
            body = client.post(
                f"{live_server.url}/v1/predictions", json={"version": version, "input": {}}, headers=headers
            )
            prediction = body.json()
            while prediction["status"] in ("starting", "processing"):
                prediction = client.get(prediction["urls"]["get"], headers=headers).json()
            return f"{prediction['status']}: {prediction.get('error')}"

    with ThreadPoolExecutor(max_workers=24) as pool:
        outcomes = list(pool.map(run, range(1000)))
    failed = [outcome for outcome in outcomes if not outcome.startswith("succeeded")]
    assert failed == [], failed[:5]
