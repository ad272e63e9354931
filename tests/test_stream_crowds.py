"""Crowds of streams (issue 19): a quiet stream costs the database nothing, and many of them leave the API
answering.

Hundreds of streams follow one prediction that waits (the ``tokens`` fixture behind a gate file). While it
is quiet, no read of its row goes to the database (counted by a SQLAlchemy listener on the app's engine:
observed, not mocked), and the API answers meanwhile; once the gate opens, every stream gets every event
and the ``done``. On PostgreSQL, a crowd on process B follows a run on process A (one read per change for
all of them, by B's watcher).
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import event

from tests.conftest import PG_URL, LiveServer
from tests.support.models import push_fixture
from tests.support.predictions import AUTH, create, get, wait_for
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.support.sse import Event, aiter_events
from tests.test_multiapi import Pair, on, pair_of

pytestmark = pytest.mark.usefixtures("shared_build_dirs")

STREAMS = 300
TOKENS = 5
QUIET = 2.0
"""Seconds the crowd is watched while the prediction is quiet."""


@pytest.fixture(autouse=True)
def _descriptors() -> None:
    """Room for a few hundred connections at both ends (this process holds the server too)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * STREAMS + 1024
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted, hard)
        )


async def read_stream(client: httpx.AsyncClient, url: str, seen: list[Event]) -> None:
    """Every event of ``url`` into ``seen`` until ``done``."""
    async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
        async for event in aiter_events(response):
            seen.append(event)


def check_complete(crowd: list[list[Event]]) -> None:
    for seen in crowd:
        assert [e.data for e in seen if e.event == "output"] == [f"token{i} " for i in range(TOKENS)]
        assert "".join(e.data + "\n" for e in seen if e.event == "logs") == "".join(
            f"line {i}\n" for i in range(TOKENS)
        )
        assert seen[-1].event == "done" and seen[-1].data == "{}"


async def open_crowd(client: httpx.AsyncClient, url: str, crowd: list[list[Event]]) -> list[asyncio.Task[None]]:
    """``len(crowd)`` streams of ``url``, returned once each has had the first token and its log line."""
    tasks = [asyncio.create_task(read_stream(client, url, seen)) for seen in crowd]
    deadline = time.monotonic() + 120
    while any(len(seen) < 2 for seen in crowd):
        failed = [task for task in tasks if task.done()]
        if failed:
            await failed[0]  # raises what went wrong
            raise AssertionError("a stream ended before the prediction did")
        assert time.monotonic() < deadline, f"{sum(len(s) < 2 for s in crowd)} streams did not open"
        await asyncio.sleep(0.05)
    return tasks


class Reads:
    """SELECTs whose parameters name one prediction, on an engine, while counting."""

    def __init__(self, engine: Any, prediction_id: str) -> None:
        self.engine = engine
        self.prediction_id = prediction_id
        self.count = 0

    def _seen(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and self.prediction_id in repr(parameters):
            self.count += 1

    def __enter__(self) -> Reads:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_: Any) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def test_a_crowd_of_quiet_streams_costs_no_reads_and_hears_everything(live_server: LiveServer, tmp_path: Path) -> None:
    tokens = push_fixture(live_server, tmp_path, "tokens")
    gate = tmp_path / "gate"
    quiet = create(live_server, tokens, {"count": TOKENS, "gate": str(gate)})
    deadline = time.monotonic() + 60
    while get(live_server, quiet["id"])["output"] != ["token0 "]:  # waits for the gate from now on
        assert time.monotonic() < deadline
        time.sleep(0.05)
    other = create(live_server, tokens, {"count": 1})  # queued behind the quiet one

    async def scenario() -> tuple[int, list[int], list[list[Event]]]:
        crowd: list[list[Event]] = [[] for _ in range(STREAMS)]
        limits = httpx.Limits(max_connections=STREAMS + 20, max_keepalive_connections=20)
        async with httpx.AsyncClient(timeout=120, limits=limits) as streams, httpx.AsyncClient(timeout=60) as api:
            tasks = await open_crowd(streams, quiet["urls"]["stream"], crowd)
            answers: list[int] = []
            engine = live_server.app.state.database.engine.sync_engine
            with Reads(engine, quiet["id"]) as reads:
                stop = time.monotonic() + QUIET
                while time.monotonic() < stop:
                    answers.append(
                        (await api.get(f"{live_server.url}/v1/predictions/{other['id']}", headers=AUTH)).status_code
                    )
                    answers.append((await api.get(f"{live_server.url}/v1/predictions", headers=AUTH)).status_code)
                    await asyncio.sleep(0.05)
            answers.append((await api.get(f"{live_server.url}/v1/predictions/{quiet['id']}", headers=AUTH)).status_code)
            assert all(not task.done() for task in tasks), "a stream ended while the prediction was quiet"
            gate.write_text("go")
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
        return reads.count, answers, crowd

    reads, answers, crowd = asyncio.run(scenario())
    # The old streams read the row every 0.5 s each: 300 streams, 2 s -> 1,200 reads.
    assert reads <= 5, f"{reads} reads of a quiet prediction's row by {STREAMS} streams in {QUIET} s"
    assert answers and set(answers) == {200}, answers
    check_complete(crowd)
    assert wait_for(live_server, other["id"], {"succeeded"})["output"] == ["token0 "]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    if not PG_URL:
        pytest.skip("several API processes need PostgreSQL: runs in the PostgreSQL pass (COGPORT_TEST_DATABASE_URL)")
    yield from pair_of(tmp_path_factory, "60")


async def row_scans(schema: str) -> int:
    """Index and sequential scans of ``schema``'s predictions table so far (PostgreSQL's statistics)."""
    conn = await asyncpg.connect(PG_URL.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        value = await conn.fetchval(
            "SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0) FROM pg_stat_user_tables "
            "WHERE schemaname = $1 AND relname = 'predictions'",
            schema,
        )
    finally:
        await conn.close()
    return int(value or 0)


def test_a_crowd_on_another_process_hears_everything_with_one_watch(pair: Pair) -> None:
    version = pair.version("tokens")
    gate = pair.tmp / "crowd-gate"
    quiet = create(pair.a.url, version, {"count": TOKENS, "gate": str(gate)})
    deadline = time.monotonic() + 60
    while get(pair.a.url, quiet["id"])["output"] != ["token0 "]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    streams = 100

    async def scenario() -> tuple[int, list[list[Event]]]:
        crowd: list[list[Event]] = [[] for _ in range(streams)]
        limits = httpx.Limits(max_connections=streams + 20, max_keepalive_connections=20)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            tasks = await open_crowd(client, on(pair.b, quiet["urls"]["stream"]), crowd)
            # The statistics of the opening reads are flushed: a backend that goes idle reports its counts
            # within PostgreSQL's PGSTAT_IDLE_INTERVAL (10 s).
            await asyncio.sleep(11)
            before = await row_scans(pair.schema)
            await asyncio.sleep(3 * QUIET)
            scans = await row_scans(pair.schema) - before
            assert all(not task.done() for task in tasks)
            gate.write_text("go")
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
        return scans, crowd

    scans, crowd = asyncio.run(scenario())
    check_complete(crowd)
    # The old streams read the row every 0.5 s each: 100 streams, 6 s -> 1,200 scans; B's watcher reads it
    # once per 0.5 s for all of them (two statements), A renews its claim now and then.
    print(f"{scans} scans of the predictions table in {3 * QUIET:.0f} s")
    assert scans < streams, f"{scans} scans of the predictions table while {streams} streams on B were quiet"
