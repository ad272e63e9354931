"""2,000 streams (issue 19, the chaos suite's crowd): a crowd of quiet SSE streams open on one running
prediction while clients keep creating, listing and reading runs.

Every request is answered (no dropped connection, no 5xx), no stream is refused or cut while the
prediction is quiet, and once it goes on every stream hears every token and the ``done``. The streams are
read over raw sockets (as ``bench crowds`` does) so that the client stays light beside the server.
"""

from __future__ import annotations

import asyncio
import resource
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.chaos.conftest import Load, wait_until
from tests.conftest import LiveServer
from tests.support.models import push_fixture
from tests.support.predictions import create, get, wait_for
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = [pytest.mark.usefixtures("shared_build_dirs"), pytest.mark.timeout(300)]

STREAMS = 2000
TOKENS = 3


@pytest.fixture(autouse=True)
def _descriptors() -> None:
    """Both ends of every stream are in this process (the server runs in a thread of it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * STREAMS + 2048
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"{STREAMS} streams need {wanted} file descriptors; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


class Crowd:
    """``n`` SSE streams of one path over raw sockets; each keeps what it read."""

    def __init__(self, url: str, path: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.path = path
        self.read: list[bytearray] = []
        self.statuses: list[bytes] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def _one(self, into: bytearray, connecting: asyncio.Semaphore, answered: asyncio.Future[None]) -> None:
        try:
            async with connecting:
                reader, writer = await asyncio.open_connection(self.host, self.port)
                request = f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: text/event-stream\r\n\r\n"
                writer.write(request.encode())
                self.statuses.append(await reader.readline())
        finally:
            if not answered.done():
                answered.set_result(None)
        try:
            while b"event: done" not in into:
                chunk = await reader.read(65536)
                if not chunk:
                    return  # cut: the checks below see no "done"
                into += chunk
        finally:
            writer.close()

    async def open(self, n: int) -> None:
        """Open ``n`` streams (200 connecting at a time); returns once each has its status line."""
        connecting = asyncio.Semaphore(200)
        loop = asyncio.get_running_loop()
        answers = [loop.create_future() for _ in range(n)]
        for answered in answers:
            into = bytearray()
            self.read.append(into)
            self.tasks.append(asyncio.create_task(self._one(into, connecting, answered)))
        await asyncio.gather(*answers)

    def ended(self) -> int:
        return sum(1 for task in self.tasks if task.done())


def test_two_thousand_quiet_streams_leave_every_request_answered(live_server: LiveServer, tmp_path: Path) -> None:
    tokens = push_fixture(live_server, tmp_path, "tokens")
    noop = push_fixture(live_server, tmp_path, "noop")
    gate = tmp_path / "gate"
    quiet = create(live_server, tokens, {"count": TOKENS, "gate": str(gate)})
    wait_until(lambda: get(live_server, quiet["id"])["output"] == ["token0 "], "the first token")
    stream_path = urlsplit(quiet["urls"]["stream"]).path + "?" + urlsplit(quiet["urls"]["stream"]).query

    async def scenario() -> Crowd:
        crowd = Crowd(live_server.url, stream_path)
        await crowd.open(STREAMS)
        # The crowd stays open and quiet while the load runs: another version's runs, lists and reads.
        with Load(live_server.url, noop, run_input={}, threads=2) as load:
            await asyncio.to_thread(
                wait_until, lambda: load.count(lambda a: a.status in (200, 201)) >= 40, "answers beside the crowd", 120
            )
        assert load.dropped() == [], load.dropped()[:3]
        assert [(a.operation, a.status) for a in load.answers if a.status is not None and a.status >= 500] == []
        assert crowd.ended() == 0, f"{crowd.ended()} of {STREAMS} streams ended while the prediction was quiet"
        gate.write_text("go")
        deadline = time.monotonic() + 120
        while crowd.ended() < STREAMS:
            assert time.monotonic() < deadline, f"{STREAMS - crowd.ended()} streams did not hear the end"
            await asyncio.sleep(0.1)
        await asyncio.gather(*crowd.tasks)
        return crowd

    crowd = asyncio.run(scenario())
    assert len(crowd.statuses) == STREAMS and all(b" 200 " in status for status in crowd.statuses)
    for read in crowd.read:
        text = read.decode()
        assert [f"data: token{i} " in text for i in range(TOKENS)] == [True] * TOKENS, text[-400:]
        assert "event: done" in text, text[-400:]
    assert wait_for(live_server, quiet["id"], {"succeeded"})["output"] == [f"token{i} " for i in range(TOKENS)]
