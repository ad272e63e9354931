"""A strict reader of cogport's prediction streams for tests: every event must carry an ``id:`` and a
name the official clients accept (output, logs, error, done)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx

EVENT_NAMES = {"output", "logs", "error", "done"}


@dataclass(frozen=True)
class Event:
    event: str
    id: str
    data: str


def iter_events(response: httpx.Response) -> Iterator[Event]:
    """The events of an open streaming response, checked as they come; stops after ``done``."""
    assert response.status_code == 200, response.read()
    assert response.headers["content-type"].split(";")[0] == "text/event-stream"
    event: str | None = None
    event_id: str | None = None
    data: list[str] = []
    for line in response.iter_lines():
        if line.startswith(":"):
            continue
        if line == "":
            if event is None and not data:
                continue
            assert event in EVENT_NAMES, f"event name {event!r}"
            assert event_id, f"{event} event without an id"
            yield Event(event, event_id, "\n".join(data))
            if event == "done":
                return
            event, event_id, data = None, None, []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data.append(value)
        else:
            raise AssertionError(f"unexpected field {line!r}")


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
