"""Crash safety: ``kill -9`` of the server and a restart lose nothing.

Queued predictions still run; the one that was running ends ``failed`` with a clear error; none stays
``starting`` or ``processing``. The server runs as a real ``cogport serve`` subprocess.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cogport.settings import Settings
from tests.conftest import PG_URL
from tests.support.models import fixture_dir, push
from tests.support.predictions import create, wait_for
from tests.support.processes import ServerProcess


@pytest.fixture
def server(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(
        settings.data_dir, tmp_path_factory.mktemp("venvs"), database_url=PG_URL, schema=settings.database_schema
    )
    yield srv
    srv.stop()


def test_kill_9_and_restart_loses_nothing(server: ServerProcess, tmp_path: Path) -> None:
    server.start()
    version = push(server.url, fixture_dir(tmp_path, "slow"), "slow")
    running = create(server.url, version, {"seconds": 120})
    wait_for(server.url, running["id"], {"processing"})
    queued = [create(server.url, version, {"seconds": 0.01}) for _ in range(3)]

    server.kill()
    server.start()

    failed = wait_for(server.url, running["id"], {"failed", "succeeded", "canceled"})
    assert failed["status"] == "failed"
    assert "server running it stopped" in failed["error"]
    for prediction in queued:
        done = wait_for(server.url, prediction["id"], {"succeeded", "failed", "canceled"})
        assert done["status"] == "succeeded", done
        assert done["output"] == "awake"
