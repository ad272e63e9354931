"""Deleting a version while its predictions run or wait: each ends through the normal path (so its
terminal webhook is sent) before the Janitor removes the version."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from cogport.services.janitor import VERSION_DELETED
from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.models import push_fixture
from tests.support.predictions import create, wait_for
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.support.webhooks import Receiver

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_deleting_a_running_version_sends_terminal_webhooks(
    live_server: LiveServer, tmp_path: Path, receiver: Receiver
) -> None:
    version = push_fixture(live_server, tmp_path, "slow")
    marker = tmp_path / "stopped"
    running = create(live_server, version, {"seconds": 120, "marker": str(marker)}, webhook=receiver.url)
    # one slot: the dispatcher hands two more to the backend to wait there; the last stays in the queue
    queued = [
        create(live_server, version, {"seconds": 120}, webhook=receiver.url, webhook_events_filter=["completed"])
        for _ in range(3)
    ]
    wait_for(live_server, running["id"], {"processing"})

    deleted = httpx.delete(f"{live_server.url}/v1/models/admin/slow/versions/{version}", headers=AUTH)
    assert deleted.status_code == 202, deleted.text

    deliveries = receiver.wait_terminal(4, timeout=60)
    ends = {body["id"]: body for body in (json.loads(d.body) for d in deliveries) if body["status"] != "processing"}
    assert ends[running["id"]]["status"] == "canceled"
    # those the backend held are canceled there; the one still queued fails, saying why
    assert all(ends[q["id"]]["status"] in ("canceled", "failed") for q in queued)
    assert ends[queued[-1]["id"]]["status"] == "failed"
    assert ends[queued[-1]["id"]]["error"] == VERSION_DELETED
    assert marker.read_text() == "stopped"  # the model was stopped, not left running

    deadline = time.monotonic() + 60
    while httpx.get(f"{live_server.url}/v1/predictions/{running['id']}", headers=AUTH).status_code != 404:
        assert time.monotonic() < deadline, "the Janitor did not remove the version"
        time.sleep(0.2)
