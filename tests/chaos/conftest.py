"""Shared by the chaos tests: clients that keep hammering a live server while a fault is on, recording every
answer (or the lack of one)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from tests.conftest import ADMIN_TOKEN

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
DRIVER_WORDS = ("sqlalche", "asyncpg", "sqlite3", "OperationalError", "Background on this error", "Traceback")


@dataclass
class Answer:
    operation: str
    status: int | None
    """None: no answer (the connection was dropped or timed out)."""
    headers: dict[str, str]
    body: str
    at: float


@dataclass
class Load:
    """``threads`` clients, each on one kept-alive connection, creating runs (async and sync), listing them
    and reading one, until stopped. Every run a create answered with 201 is in ``created``."""

    url: str
    version: str
    extra: dict[str, Any] = field(default_factory=dict)
    """Fields for every create (a webhook)."""
    threads: int = 4
    run_input: dict[str, Any] = field(default_factory=lambda: {"seconds": 0.05})
    uploads: bool = False
    """Upload a 64 KiB file as well, every fifth request."""
    answers: list[Answer] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for index in range(self.threads):
            worker = threading.Thread(target=self._work, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    def _work(self, index: int) -> None:
        create = {"version": self.version, "input": self.run_input, **self.extra}
        operations: list[tuple[str, Callable[[httpx.Client], httpx.Response]]] = [
            ("create", lambda c: c.post("/v1/predictions", json=create)),
            ("sync", lambda c: c.post("/v1/predictions", json=create, headers={"Prefer": "wait=20"})),
            ("list", lambda c: c.get("/v1/predictions")),
            ("get", lambda c: c.get(f"/v1/predictions/{self.created[-1] if self.created else 'none'}")),
        ]
        if self.uploads:
            blob = b"x" * 65536
            operations.append(("upload", lambda c: c.post("/v1/files", files={"content": ("blob.bin", blob)})))
        with httpx.Client(base_url=self.url, headers=AUTH, timeout=30) as client:
            turn = index
            while not self._stop.is_set():
                name, call = operations[turn % len(operations)]
                turn += 1
                try:
                    response = call(client)
                except httpx.TransportError as exc:
                    self._record(Answer(name, None, {}, repr(exc), time.monotonic()))
                    continue
                headers = dict(response.headers)
                self._record(Answer(name, response.status_code, headers, response.text, time.monotonic()))
                if name in ("create", "sync") and response.status_code in (201, 202):
                    with self._lock:
                        self.created.append(response.json()["id"])
                time.sleep(0.01)

    def _record(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def count(self, predicate: Callable[[Answer], bool], since: float = 0.0) -> int:
        with self._lock:
            return sum(1 for answer in self.answers if answer.at >= since and predicate(answer))

    def dropped(self) -> list[Answer]:
        return [answer for answer in self.answers if answer.status is None]

    def errors(self) -> list[Answer]:
        return [answer for answer in self.answers if answer.status is not None and answer.status >= 500]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``condition`` until it holds (a bound on a hung test, not a timed assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def check_fault_answer(answer: Answer, statuses: set[int]) -> None:
    """A fault's answer: one of ``statuses``, Retry-After, a short problem body with no driver text."""
    assert answer.status in statuses, (answer.operation, answer.status, answer.body[:300])
    assert answer.headers.get("retry-after", "").isdigit(), (answer.operation, answer.headers)
    import json

    body = json.loads(answer.body)
    assert set(body) == {"title", "detail", "status"}, body
    assert body["status"] == answer.status
    assert not any(word.lower() in answer.body.lower() for word in DRIVER_WORDS), body
