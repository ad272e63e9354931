"""A strict reader of cogport's prediction streams for tests: every event must carry an ``id:`` and a
name the official clients accept (output, logs, error, done)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx

EVENT_NAMES = {"output", "logs", "error", "done"}


@dataclass(frozen=True)
class Event:
    event: str
    id: str
    data: str


class Parser:
    """Lines of a stream in, checked events out (``feed`` answers one when a blank line ends it)."""

    def __init__(self) -> None:
        self.event: str | None = None
        self.event_id: str | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> Event | None:
        if line.startswith(":"):
            return None
        if line == "":
            if self.event is None and not self.data:
                return None
            assert self.event in EVENT_NAMES, f"event name {self.event!r}"
            assert self.event_id, f"{self.event} event without an id"
            done = Event(self.event, self.event_id, "\n".join(self.data))
            self.event, self.event_id, self.data = None, None, []
            return done
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "id":
            self.event_id = value
        elif name == "data":
            self.data.append(value)
        else:
            raise AssertionError(f"unexpected field {line!r}")
        return None


def _check_headers(response: httpx.Response) -> None:
    assert response.headers["content-type"].split(";")[0] == "text/event-stream"


def iter_events(response: httpx.Response) -> Iterator[Event]:
    """The events of an open streaming response, checked as they come; stops after ``done``."""
    assert response.status_code == 200, response.read()
    _check_headers(response)
    parser = Parser()
    for line in response.iter_lines():
        event = parser.feed(line)
        if event is not None:
            yield event
            if event.event == "done":
                return


async def aiter_events(response: httpx.Response) -> AsyncIterator[Event]:
    """:func:`iter_events` of an ``httpx.AsyncClient`` response."""
    assert response.status_code == 200, await response.aread()
    _check_headers(response)
    parser = Parser()
    async for line in response.aiter_lines():
        event = parser.feed(line)
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
