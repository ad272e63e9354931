"""Cancel in every state, deadlines, failing models: each ends in a terminal state with a clear message."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ADMIN_TOKEN, LiveServer
from tests.support.models import push_fixture
from tests.support.predictions import cancel, create, get, wait_for
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_cancel_running_queued_and_terminal(live_server: LiveServer, tmp_path: Path) -> None:
    slow = push_fixture(live_server, tmp_path, "slow")
    marker = tmp_path / "stopped"
    running = create(live_server, slow, {"seconds": 60, "marker": str(marker)})
    wait_for(live_server, running["id"], {"processing"})
    queued = create(live_server, slow, {"seconds": 1})  # concurrency 1: waits behind the first

    assert get(live_server, queued["id"])["status"] == "starting"
    canceled_queued = cancel(live_server, queued["id"])
    assert canceled_queued["status"] == "canceled"
    assert "started_at" not in canceled_queued

    canceled = cancel(live_server, running["id"])
    assert canceled["status"] == "canceled"
    assert marker.read_text() == "stopped"  # reported canceled only once the model had stopped
    assert canceled["metrics"]["total_time"] > 0 and canceled["completed_at"]

    again = cancel(live_server, running["id"])
    assert again["status"] == "canceled" and again["completed_at"] == canceled["completed_at"]
    # The instance is still good for work.
    done = create(live_server, slow, {"seconds": 0.01}, headers={"Prefer": "wait=60"})
    assert done["status"] == "succeeded" and done["output"] == "awake"


def test_crashing_model_fails_clearly_and_recovers(live_server: LiveServer, tmp_path: Path) -> None:
    crash = push_fixture(live_server, tmp_path, "crash")
    failed = create(live_server, crash, {"crash": True}, headers={"Prefer": "wait=60"})
    assert failed["status"] == "failed"
    assert "crash" in failed["error"].lower()
    assert not failed["error"].lower().startswith("prediction failed")
    survived = create(live_server, crash, {"crash": False}, headers={"Prefer": "wait=60"})
    assert survived["status"] == "succeeded" and survived["output"] == "survived"


def test_setup_failure_fails_predictions_with_the_setup_error(live_server: LiveServer, tmp_path: Path) -> None:
    broken = push_fixture(live_server, tmp_path, "setup_fail")
    first = create(live_server, broken, {})
    ended = wait_for(live_server, first["id"], {"failed"})
    assert "weights missing" in ended["error"]


def test_deadline_passing_while_running_cancels(live_server: LiveServer, tmp_path: Path) -> None:
    slow = push_fixture(live_server, tmp_path, "slow")
    started = create(live_server, slow, {"seconds": 60}, headers={"Cancel-After": "5s"})
    assert "deadline" in started
    ended = wait_for(live_server, started["id"], {"canceled", "failed", "succeeded"}, timeout=30)
    assert ended["status"] == "canceled"


def test_deadline_passing_while_queued_aborts(live_server: LiveServer, tmp_path: Path) -> None:
    slow = push_fixture(live_server, tmp_path, "slow")
    blocker = create(live_server, slow, {"seconds": 60})
    wait_for(live_server, blocker["id"], {"processing"})
    queued = create(live_server, slow, {"seconds": 1}, headers={"Cancel-After": "5s"})
    ended = wait_for(live_server, queued["id"], {"canceled", "aborted", "failed", "succeeded"}, timeout=30)
    # Reported as "canceled" by default (replicate-python 1.0.7 cannot parse "aborted"); never started.
    assert ended["status"] == "canceled"
    assert "started_at" not in ended
    cancel(live_server, blocker["id"])


def test_sync_wait_runs_out_with_starting(live_server: LiveServer, tmp_path: Path) -> None:
    slow = push_fixture(live_server, tmp_path, "slow")
    began = time.monotonic()
    body = create(live_server, slow, {"seconds": 30}, headers={"Prefer": "wait=1"})
    assert time.monotonic() - began < 5
    assert body["status"] == "starting"  # what the official clients expect when the wait runs out
    assert get(live_server, body["id"])["status"] in ("starting", "processing")
    cancel(live_server, body["id"])


def test_cancel_with_the_official_client(replicate_env: Any, live_server: LiveServer, tmp_path: Path) -> None:
    replicate = replicate_env
    slow = push_fixture(live_server, tmp_path, "slow")
    running = replicate.predictions.create(version=slow, input={"seconds": 60})
    while running.status != "processing":
        time.sleep(0.05)
        running.reload()
    queued = replicate.predictions.create(version=slow, input={"seconds": 60})
    assert replicate.predictions.cancel(queued.id).status == "canceled"
    running.cancel()  # the Prediction method: POST urls.cancel
    running.wait()
    assert running.status == "canceled"
    assert running.completed_at is not None
