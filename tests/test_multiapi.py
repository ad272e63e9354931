"""Several API processes on one PostgreSQL database (issue 12), as behind a load balancer.

Two real ``cogport serve`` processes share the database (a schema of the test's own) and the data
directory. A prediction made on one is streamed from the other, canceled from the other at once (not at
the next housekeeping round of the process running it, 20 s away with the 60 s lease these use), and
when one is killed with -9 the other carries on its work: queued runs run there, the run that had
started ends ``failed`` saying why.

They need PostgreSQL, so they run in the suite's PostgreSQL pass (``COGPORT_TEST_DATABASE_URL``); on
SQLite cogport is one process by design (running them twice would test the same thing twice).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import PG_URL, _drop_schema
from tests.support.models import push_fixture
from tests.support.predictions import AUTH, cancel, create, get, wait_for
from tests.support.processes import ServerProcess
from tests.support.sse import iter_events

pytestmark = pytest.mark.skipif(
    not PG_URL, reason="several API processes need PostgreSQL: runs in the PostgreSQL pass (COGPORT_TEST_DATABASE_URL)"
)

TERMINAL = {"succeeded", "failed", "canceled"}


class Pair:
    """Processes A and B on one schema and data directory (and the models pushed through A)."""

    def __init__(self, tmp: Path, venvs: Path, lease: str) -> None:
        self.tmp = tmp
        self.schema = f"multi_{uuid.uuid4().hex[:12]}"

        def server(node: str) -> ServerProcess:
            return ServerProcess(
                tmp / "data",
                venvs,
                database_url=PG_URL,
                schema=self.schema,
                log=tmp / f"{node}.log",
                binds=[tmp],
                COGPORT_NODE_ID=node,
                COGPORT_LEASE_SECONDS=lease,
            )

        self.a, self.b = server("node-a"), server("node-b")
        self.versions: dict[str, str] = {}

    def version(self, name: str) -> str:
        if name not in self.versions:
            self.versions[name] = push_fixture(self.a.url, self.tmp, name)
        return self.versions[name]

    def claims(self) -> dict[str, tuple[str, str | None]]:
        """``{id: (status, claimed_by)}`` of every prediction, read from the database."""

        async def read() -> dict[str, tuple[str, str | None]]:
            conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
            try:
                rows = await conn.fetch(f'SELECT id, status, claimed_by FROM "{self.schema}".predictions')
            finally:
                await conn.close()
            return {row["id"]: (row["status"], row["claimed_by"]) for row in rows}

        return asyncio.run(read())


def pair_of(factory: pytest.TempPathFactory, lease: str) -> Iterator[Pair]:
    pair = Pair(factory.mktemp("multi"), factory.mktemp("venvs"), lease)
    try:
        pair.a.start()
        pair.b.start()
        yield pair
    finally:
        pair.a.stop()
        pair.b.stop()
        _drop_schema(pair.schema)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Shared by the tests of streams and cancels (starting processes and pushing models is the slow
    part). A lease of 60 s: A's housekeeping (which also sees cancel flags) runs every 20 s, so only a
    notification makes a cancel prompt."""
    yield from pair_of(tmp_path_factory, "60")


@pytest.fixture
def short_leases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Leases of 2 s, so that a killed process's claims run out quickly."""
    yield from pair_of(tmp_path_factory, "2")


def on(server: ServerProcess, url: str) -> str:
    """``url`` (one of another process's) on ``server``, as a load balancer would route it."""
    path = url.split("/", 3)[3]
    return f"{server.url}/{path}"


def test_a_prediction_made_on_one_process_streams_from_another(pair: Pair) -> None:
    version = pair.version("iterator")
    gate = pair.tmp / "gate"
    prediction = create(pair.a.url, version, {"count": 3, "gate": str(gate)}, stream=True)
    events: list[Any] = []
    with httpx.stream("GET", on(pair.b, prediction["urls"]["stream"]), timeout=60) as response:
        for event in iter_events(response):
            events.append(event)
            if event.event == "output" and not gate.exists():
                opened = time.monotonic()
                gate.touch()  # the rest comes once the first token was seen through the other process
            if event.event == "done":
                finished = time.monotonic()
    outputs = [e.data for e in events if e.event == "output"]
    assert outputs == ["token0 ", "token1 ", "token2 "]
    logs = "\n".join(e.data for e in events if e.event == "logs")
    assert "yielding token0" in logs and "yielding token2" in logs
    assert events[-1].event == "done" and events[-1].data == "{}"
    assert finished - opened < 2.0
    assert get(pair.b.url, prediction["id"])["status"] == "succeeded"


def test_a_prediction_running_on_one_process_is_canceled_from_another_at_once(pair: Pair) -> None:
    version = pair.version("slow")
    marker = pair.tmp / "stopped"
    prediction = create(pair.a.url, version, {"seconds": 120, "marker": str(marker)})
    wait_for(pair.a.url, prediction["id"], {"processing"})
    assert pair.claims()[prediction["id"]][1] == "node-a"  # it runs on A

    started = time.monotonic()
    canceled = cancel(pair.b.url, prediction["id"])  # answers once the wait (on B) has seen it end
    elapsed = time.monotonic() - started
    assert canceled["status"] == "canceled", canceled
    assert elapsed < 3.0, f"the cancel took {elapsed:.2f} s"  # about 0.25 s; A's housekeeping is 20 s away
    assert marker.read_text() == "stopped"  # the model really stopped
    assert get(pair.a.url, prediction["id"])["status"] == "canceled"


def test_a_queued_prediction_is_canceled_from_another_process(pair: Pair) -> None:
    version = pair.version("slow")
    running = create(pair.a.url, version, {"seconds": 120})
    wait_for(pair.a.url, running["id"], {"processing"})
    queued = create(pair.a.url, version, {"seconds": 0.01})  # claimed by A, waiting for its one slot
    for _ in range(1500):  # A's dispatcher claims it a moment after the create (wait for it, however busy)
        if pair.claims()[queued["id"]] == ("starting", "node-a"):
            break
        time.sleep(0.02)
    assert pair.claims()[queued["id"]] == ("starting", "node-a")
    started = time.monotonic()
    assert cancel(pair.b.url, queued["id"])["status"] == "canceled"
    assert time.monotonic() - started < 3.0
    assert cancel(pair.b.url, running["id"])["status"] == "canceled"


def test_when_a_process_is_killed_the_other_carries_on_its_work(short_leases: Pair) -> None:
    pair = short_leases
    version = pair.version("slow")
    running = create(pair.a.url, version, {"seconds": 120})
    wait_for(pair.a.url, running["id"], {"processing"})
    queued = [create(pair.a.url, version, {"seconds": 0.01}) for _ in range(3)]
    claims = pair.claims()
    assert claims[running["id"]] == ("processing", "node-a")
    assert any(claims[p["id"]] == ("starting", "node-a") for p in queued), claims  # A had claimed queued work

    pair.a.kill()
    killed = time.monotonic()

    failed = wait_for(pair.b.url, running["id"], TERMINAL, timeout=30)
    assert failed["status"] == "failed"
    assert "server running it stopped" in failed["error"]
    assert time.monotonic() - killed < 10  # a lease (2 s here, 15 s by default) and a housekeeping round
    for prediction in queued:
        done = wait_for(pair.b.url, prediction["id"], TERMINAL, timeout=60)
        assert done["status"] == "succeeded", done
        assert done["output"] == "awake"
    assert set(pair.claims().values()) == {("failed", None), ("succeeded", None)}
    response = httpx.get(f"{pair.b.url}/v1/predictions", headers=AUTH)
    assert all(p["status"] in TERMINAL for p in response.json()["results"])
