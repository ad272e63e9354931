"""The notifier (lifecycle/notify.py) on a real PostgreSQL: two of them, as two API processes would have.

Changes reach the other process's hub (never its own), cancels reach its handler, big batches are split
under PostgreSQL's payload limit, and a dropped connection is made again. These need PostgreSQL: they run
in the suite's PostgreSQL pass (``COGPORT_TEST_DATABASE_URL``), and on SQLite the notifier does nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from cogport.db.tables import Prediction
from cogport.lifecycle.hub import Change, Hub
from cogport.lifecycle.notify import MAX_PAYLOAD, Notifier, channel_names, payloads
from cogport.lifecycle.status import Announcement
from cogport.settings import Settings
from tests.conftest import PG_URL

needs_postgres = pytest.mark.skipif(
    not PG_URL, reason="LISTEN/NOTIFY is PostgreSQL's: runs in the PostgreSQL pass (COGPORT_TEST_DATABASE_URL)"
)


class Side:
    """One process's end: its hub, notifier, and what its cancel and reconnect handlers heard."""

    def __init__(self, settings: Settings, node: str) -> None:
        self.hub = Hub()
        self.cancels: list[str] = []
        self.reconnects = 0
        self.notifier = Notifier(settings, self.hub, node=node, on_cancel=self._cancel, on_reconnect=self._reconnected)

    async def _cancel(self, prediction_id: str) -> None:
        self.cancels.append(prediction_id)

    def _reconnected(self) -> None:
        self.reconnects += 1


@pytest.fixture
async def pair(settings: Settings) -> AsyncIterator[tuple[Side, Side]]:
    a, b = Side(settings, "node-a"), Side(settings, "node-b")
    await a.notifier.start()
    await b.notifier.start()
    try:
        yield a, b
    finally:
        await a.notifier.close()
        await b.notifier.close()


def announce(side: Side, prediction_id: str, kind: str = "logs") -> None:
    side.notifier.after_commit(Announcement(Prediction(id=prediction_id), kind))  # type: ignore[arg-type]


async def changes(queue: asyncio.Queue[Change], count: int) -> list[Change]:
    got = []
    async with asyncio.timeout(2):
        while len(got) < count:
            got.append(await queue.get())
    return got


async def eventually(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


@needs_postgres
async def test_changes_reach_the_other_process_only(pair: tuple[Side, Side]) -> None:
    a, b = pair
    theirs, ours = b.hub.subscribe("p-1"), a.hub.subscribe("p-1")
    done = b.hub.completion("p-1")
    started = time.monotonic()
    announce(a, "p-1", "logs")
    announce(a, "p-1", "completed")
    got = await changes(theirs, 2)
    assert [(c.prediction_id, c.kind, c.data) for c in got] == [("p-1", "logs", None), ("p-1", "completed", None)]
    assert time.monotonic() - started < 0.5
    assert await asyncio.wait_for(done, 1) is None  # a waiter there reads the row again
    await asyncio.sleep(0.1)
    assert ours.empty()  # its own hub heard of it from the recorder and the hooks already


@needs_postgres
async def test_cancels_reach_the_handler_of_the_other_process(pair: tuple[Side, Side]) -> None:
    a, b = pair
    a.notifier.cancel("p-2")
    await eventually(lambda: b.cancels == ["p-2"])
    assert a.cancels == []


@needs_postgres
async def test_a_burst_is_split_under_the_payload_limit(pair: tuple[Side, Side]) -> None:
    a, b = pair
    ids = [f"prediction-{i:05d}-{'x' * 20}" for i in range(1000)]
    queues = {prediction_id: b.hub.subscribe(prediction_id) for prediction_id in ids}
    for prediction_id in ids:
        announce(a, prediction_id, "output")
    await eventually(lambda: all(not q.empty() for q in queues.values()))
    sent = payloads("node-a", [f"output {i}" for i in ids])
    assert len(sent) > 1 and all(len(body.encode()) <= MAX_PAYLOAD for body in sent)


@needs_postgres
async def test_a_dropped_connection_is_made_again(pair: tuple[Side, Side], settings: Settings) -> None:
    a, b = pair
    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("SELECT pg_terminate_backend($1)", b.notifier._conn.get_server_pid())
    finally:
        await conn.close()
    await eventually(lambda: b.reconnects == 1 and b.notifier.connected)
    queue = b.hub.subscribe("p-3")
    announce(a, "p-3", "start")
    assert [c.kind for c in await changes(queue, 1)] == ["start"]
    b.notifier.cancel("p-4")  # and it sends again too
    await eventually(lambda: a.cancels == ["p-4"])


async def test_on_sqlite_it_does_nothing(tmp_path: Path) -> None:
    side = Side(Settings(data_dir=tmp_path, database_url=""), "solo")
    assert not side.notifier.enabled
    await side.notifier.start()
    announce(side, "p-5")
    side.notifier.cancel("p-5")
    assert not side.notifier.connected
    await side.notifier.close()


def test_channels_are_per_schema() -> None:
    assert channel_names(None) == ("cogport_changes", "cogport_cancels")
    assert channel_names("t_1") == ("cogport_changes_t_1", "cogport_cancels_t_1")
    long = channel_names("s" * 100)
    assert all(len(name) <= 63 for name in long) and long != channel_names("s" * 99)
