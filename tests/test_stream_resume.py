"""Prediction streams over the wire: resume with ``Last-Event-ID``, replay of finished predictions, and how
failed and canceled predictions end. Every event has an ``id:`` and one of the four names the clients accept
(checked by :mod:`tests.support.sse` on every read)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cogport.api.routes import streams
from tests.conftest import LiveServer
from tests.support import sse
from tests.support.models import push_fixture
from tests.support.predictions import cancel, create, get, wait_for
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures

pytestmark = pytest.mark.usefixtures("shared_build_dirs")
SSE_HEADERS = {"Accept": "text/event-stream"}


@pytest.fixture
def tokens(live_server: LiveServer, tmp_path: Path) -> str:
    return push_fixture(live_server, tmp_path, "tokens")


def read_some(url: str, count: int, last_event_id: str | None = None) -> list[sse.Event]:
    """The first ``count`` events, then drop the connection."""
    headers = dict(SSE_HEADERS)
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    taken: list[sse.Event] = []
    with httpx.stream("GET", url, headers=headers, timeout=60) as response:
        for event in sse.iter_events(response):
            taken.append(event)
            if len(taken) == count:
                break
    return taken


def expected_tokens(count: int) -> list[str]:
    return [f"token{i} " for i in range(count)]


def expected_logs(count: int) -> str:
    return "".join(f"line {i}\n" for i in range(count))


def test_resume_while_running_loses_and_repeats_nothing(live_server: LiveServer, tokens: str) -> None:
    created = create(live_server, tokens, {"count": 40, "delay": 0.01})
    url = created["urls"]["stream"]
    seen: list[sse.Event] = []
    # Three connections, each dropped after a few events, then one to the end.
    for _ in range(3):
        seen += read_some(url, 4, seen[-1].id if seen else None)
    seen += sse.read_all(url, last_event_id=seen[-1].id)
    assert sse.outputs(seen) == expected_tokens(40)
    assert sse.logs(seen) == expected_logs(40)
    assert [e.event for e in seen].count("done") == 1 and seen[-1].event == "done"
    ids = [e.id for e in seen]
    assert len(set(ids[:-1])) == len(ids) - 1  # each event moves the cursor (done repeats the last id)
    final = get(live_server, created["id"])
    assert final["output"] == expected_tokens(40) and final["logs"] == expected_logs(40)


def test_resume_while_the_model_waits(live_server: LiveServer, tokens: str, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    created = create(live_server, tokens, {"count": 5, "gate": str(gate)})
    url = created["urls"]["stream"]
    first = read_some(url, 1)
    assert first[0].event in ("output", "logs")
    # Reconnect before the model goes on: the resumed stream is live and gets the rest as it comes.
    result: list[sse.Event] = []
    reader = threading.Thread(target=lambda: result.extend(sse.read_all(url, last_event_id=first[-1].id)))
    reader.start()
    time.sleep(0.2)
    gate.write_text("go")
    reader.join(timeout=60)
    assert not reader.is_alive()
    seen = first + result
    assert sse.outputs(seen) == expected_tokens(5)
    assert sse.logs(seen) == expected_logs(5)
    assert seen[-1].event == "done" and json.loads(seen[-1].data) == {}


def test_finished_prediction_replays_and_ends_with_done(live_server: LiveServer, tokens: str) -> None:
    created = create(live_server, tokens, {"count": 3, "first": "two\nlines "})
    wait_for(live_server, created["id"], {"succeeded"})
    url = created["urls"]["stream"]
    events = sse.read_all(url)
    assert sse.outputs(events) == ["two\nlines ", "token1 ", "token2 "]  # multi-line data survives
    assert sse.logs(events) == expected_logs(3)
    assert events[-1].event == "done" and json.loads(events[-1].data) == {}
    # Resuming from the last id replays nothing but the end.
    again = sse.read_all(url, last_event_id=events[-2].id)
    assert [e.event for e in again] == ["done"]
    # A client that never saw anything (or sends garbage) gets it all again.
    assert sse.outputs(sse.read_all(url, last_event_id="garbage")) == sse.outputs(events)


def test_python_client_reads_multiline_tokens(replicate_env: Any, tokens: str) -> None:
    events = list(replicate_env.stream(f"admin/tokens:{tokens}", input={"count": 2, "first": "a\nb\n\nc"}))
    outputs = [str(e) for e in events if e.event.value == "output"]
    assert outputs == ["a\nb\n\nc", "token1 "]


def test_failed_prediction_ends_with_error_then_done(live_server: LiveServer, tokens: str) -> None:
    created = create(live_server, tokens, {"count": 2, "fail": "the model gave up"})
    events = sse.read_all(created["urls"]["stream"])
    assert sse.outputs(events) == expected_tokens(2)
    assert [e.event for e in events[-2:]] == ["error", "done"]
    assert "the model gave up" in json.loads(events[-2].data)["detail"]
    assert json.loads(events[-1].data) == {"reason": "error"}
    assert get(live_server, created["id"])["status"] == "failed"
    # The same again as a replay (outputs first, then the logs, in one go).
    replay = sse.read_all(created["urls"]["stream"])
    assert sse.outputs(replay) == sse.outputs(events) and sse.logs(replay) == sse.logs(events)
    assert [(e.event, e.data) for e in replay[-2:]] == [(e.event, e.data) for e in events[-2:]]


def test_python_client_raises_on_a_failed_stream(replicate_env: Any, tokens: str) -> None:
    stream = replicate_env.stream(f"admin/tokens:{tokens}", input={"count": 1, "fail": "nope"})
    seen = []
    with pytest.raises(RuntimeError, match="nope"):
        for event in stream:
            seen.append(str(event))
    assert "token0 " in seen


def test_canceled_prediction_ends_with_done_canceled(live_server: LiveServer, tokens: str, tmp_path: Path) -> None:
    created = create(live_server, tokens, {"count": 3, "gate": str(tmp_path / "never")})
    url = created["urls"]["stream"]
    events: list[sse.Event] = []
    with httpx.stream("GET", url, headers=SSE_HEADERS, timeout=60) as response:
        for event in sse.iter_events(response):
            events.append(event)
            if event.event == "output":
                cancel(live_server, created["id"])
    assert sse.outputs(events) == ["token0 "]
    assert events[-1].event == "done" and json.loads(events[-1].data) == {"reason": "canceled"}
    assert "error" not in [e.event for e in events]
    replay = sse.read_all(url)
    assert json.loads(replay[-1].data) == {"reason": "canceled"}


def test_queued_prediction_canceled_before_it_ran(live_server: LiveServer, tokens: str, tmp_path: Path) -> None:
    blocker = create(live_server, tokens, {"count": 2, "gate": str(tmp_path / "gate")})
    wait_for(live_server, blocker["id"], {"processing"})
    queued = create(live_server, tokens, {"count": 1})
    cancel(live_server, queued["id"])
    events = sse.read_all(queued["urls"]["stream"])
    assert [(e.event, json.loads(e.data)) for e in events] == [("done", {"reason": "canceled"})]
    (tmp_path / "gate").write_text("go")
    assert sse.outputs(sse.read_all(blocker["urls"]["stream"])) == expected_tokens(2)


def test_keepalive_comments_while_nothing_happens(
    live_server: LiveServer, tokens: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "KEEPALIVE", 0.2)
    gate = tmp_path / "gate"
    created = create(live_server, tokens, {"count": 2, "gate": str(gate)})
    comments = 0
    with httpx.stream("GET", created["urls"]["stream"], headers=SSE_HEADERS, timeout=60) as response:
        for line in response.iter_lines():
            if line.startswith(":"):
                comments += 1
                if comments == 2:
                    gate.write_text("go")
            if line.startswith("event: done"):
                break
    assert comments >= 2
