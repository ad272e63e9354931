"""The database stops under load and comes back (issue 19, finding 2): a PostgreSQL of the test's own,
stopped with the server running and started again.

While it is down: every request gets an answer (no dropped connection), each failure is a 503 with
Retry-After and a short problem body (no driver text), and the log holds a few lines, not a traceback per
request. Runs that end while it is down keep their end: once it is back each ends as the model ended it
(``succeeded``, never "interrupted"), exactly once (one ``completed`` webhook each), and stored. A run
answered 201 is readable by id at once, from the process that answered, even while its row or its end is
not written yet. The lease is shorter
than the outage, so the dispatcher's housekeeping meets its own lapsed claims when the database returns.

It runs its own PostgreSQL whatever ``COGPORT_TEST_DATABASE_URL`` says, so it runs in the SQLite pass only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cogport.settings import Settings
from tests.chaos.conftest import Load, check_fault_answer, wait_until
from tests.conftest import PG_URL, LiveServer
from tests.support.models import push_fixture
from tests.support.postgres import PrivatePostgres, private_postgres
from tests.support.predictions import create, get
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.support.webhooks import Receiver

pytestmark = [
    pytest.mark.usefixtures("shared_build_dirs"),
    pytest.mark.skipif(bool(PG_URL), reason="runs a PostgreSQL of its own: the SQLite pass runs it"),
    pytest.mark.timeout(240),
]

TERMINAL = {"succeeded", "failed", "canceled", "aborted"}
IN_FLIGHT = 4


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


@pytest.fixture
def settings(settings: Settings, postgres: PrivatePostgres) -> Settings:
    settings.database_url = postgres.url
    settings.database_schema = None
    settings.lease_seconds = 1.0  # shorter than the outage: every claim lapses while it lasts
    settings.runtime.max_instances_per_version = 2
    return settings


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != "cogport.access":  # one line per request by design
            self.records.append(record)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn.error"), logging.getLogger("cogport")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
    logging.getLogger("cogport").setLevel(logging.INFO)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


async def stored_statuses(url: str, ids: list[str]) -> dict[str, str]:
    connection = await asyncpg.connect(url)
    try:
        rows = await connection.fetch("SELECT id, status FROM predictions WHERE id = ANY($1::text[])", ids)
    finally:
        await connection.close()
    return {row["id"]: row["status"] for row in rows}


def test_a_database_outage_answers_every_request_and_loses_no_result(
    live_server: LiveServer, postgres: PrivatePostgres, receiver: Receiver, records: Records, tmp_path: Path
) -> None:
    version = push_fixture(live_server, tmp_path, "slow")
    hooks: dict[str, Any] = {"webhook": receiver.url, "webhook_events_filter": ["completed"]}
    # Runs that end while the database is down (two at a time): each touches its marker as it ends.
    markers = [tmp_path / f"ended-{index}" for index in range(IN_FLIGHT)]
    in_flight = [create(live_server, version, {"seconds": 1.0, "marker": str(m)}, **hooks)["id"] for m in markers]
    wait_until(lambda: get(live_server, in_flight[0])["status"] == "processing", "the first run processing")

    with Load(live_server.url, version, hooks) as load:
        wait_until(lambda: load.count(lambda a: a.status in (200, 201)) >= 8, "answers before the outage")
        postgres.stop()
        stopped_at = time.monotonic()
        stopped = len(records.records)
        wait_until(lambda: all(marker.exists() for marker in markers), "the runs in flight ended")
        wait_until(lambda: load.count(lambda a: a.status == 503) >= 40, "503s during the outage")
        # Long enough for every lease to lapse (three of them), as in a real outage of a few seconds.
        wait_until(lambda: time.monotonic() - stopped_at > 3, "the leases lapsed")
        outage_lines = records.records[stopped:]
        down_at = load.answers[-1].at
        postgres.start()
        restarted = time.monotonic()
        wait_until(lambda: load.count(lambda a: a.operation == "sync" and a.status == 201, restarted) >= 4, "back")

    assert load.dropped() == [], load.dropped()[:3]
    for answer in load.errors():
        check_fault_answer(answer, {503})

    # Few log lines for hundreds of failed requests, and no traceback (the one of uvicorn included).
    assert len(outage_lines) < 40, [r.getMessage()[:200] for r in outage_lines]
    assert [r.getMessage() for r in outage_lines if r.exc_info] == []

    runs = in_flight + load.created
    wait_until(lambda: all(get(live_server, i)["status"] in TERMINAL for i in runs), "every run ended", 120)
    served = [a.at for a in load.answers if a.at >= restarted and a.status in (200, 201)]
    print(  # the figures of docs/operations.md ("Faults"), with -s
        f"\noutage {down_at - stopped_at:.1f}s: {len(load.answers)} requests, {len(load.errors())} answered 503, "
        f"{len(load.dropped())} dropped, {len(outage_lines)} log lines; first answer after the restart "
        f"{(served[0] - restarted) if served else -1:.2f}s; {len(runs)} runs"
    )
    ends = {i: get(live_server, i) for i in runs}
    wrong = {
        i: (e["status"], e["error"]) for i, e in ends.items() if (e["status"], e["output"]) != ("succeeded", "awake")
    }
    assert wrong == {}
    # Stored, not only held: each end is in the database as the model ended it.
    assert asyncio.run(stored_statuses(postgres.url, runs)) == dict.fromkeys(runs, "succeeded")
    # Exactly once: one completed webhook per run.
    wait_until(lambda: len({d.json["id"] for d in receiver.deliveries}) >= len(runs), "a webhook per run", 120)
    completed = Counter(d.json["id"] for d in receiver.deliveries if d.status in TERMINAL)
    assert {i: n for i, n in completed.items() if n != 1} == {}
    assert set(completed) == set(runs)
