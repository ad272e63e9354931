"""A strict reader of cogport's prediction streams for tests, on httpx-sse: every event must carry an ``id``
and a name the official clients accept (output, logs, error, done), and nothing else (no ``retry``).

The id is checked as a client sees it: SSE keeps the last id for events that name none, and every event
cogport writes names its own (``api/routes/streams.py``'s ``sse()`` writes all of them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
from httpx_sse import EventSource, ServerSentEvent

EVENT_NAMES = {"output", "logs", "error", "done"}


@dataclass(frozen=True)
class Event:
    event: str
    id: str
    data: str


def checked(sse: ServerSentEvent) -> Event | None:
    """The event, checked; None for what SSE does not dispatch (httpx-sse's issue 35 makes an unnamed event
    with no data of a ``: keepalive`` comment after an ``id:``)."""
    if sse.event == "message" and not sse.data:
        return None
    assert sse.event in EVENT_NAMES, f"event name {sse.event!r}"
    assert sse.id, f"{sse.event} event without an id"
    assert sse.retry is None, f"unexpected retry field in {sse!r}"
    return Event(sse.event, sse.id, sse.data)


def _check_response(response: httpx.Response) -> None:
    assert response.headers["content-type"].split(";")[0] == "text/event-stream"


def iter_events(response: httpx.Response) -> Iterator[Event]:
    """The events of an open streaming response, checked as they come; stops after ``done``."""
    assert response.status_code == 200, response.read()
    _check_response(response)
    for sse in EventSource(response).iter_sse():
        event = checked(sse)
        if event is not None:
            yield event
            if event.event == "done":
                return


async def aiter_events(response: httpx.Response) -> AsyncIterator[Event]:
    """:func:`iter_events` of an ``httpx.AsyncClient`` response."""
    assert response.status_code == 200, await response.aread()
    _check_response(response)
    async for sse in EventSource(response).aiter_sse():
        event = checked(sse)
        if event is not None:
            yield event
            if event.event == "done":
                return


def read_all(url: str, *, last_event_id: str | None = None, timeout: float = 60) -> list[Event]:
    """Every event of a stream, until ``done`` (no auth: the URL is a capability)."""
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    with httpx.stream("GET", url, headers=headers, timeout=timeout) as response:
        return list(iter_events(response))


def outputs(events: list[Event]) -> list[str]:
    return [e.data for e in events if e.event == "output"]


def logs(events: list[Event]) -> str:
    """The log text the stream carried (each ``logs`` event holds whole lines, without the last newline)."""
    return "".join(e.data + "\n" for e in events if e.event == "logs")
