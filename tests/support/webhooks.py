"""A real HTTP webhook receiver for tests: records every request, answers with a status the test picks, and
can be stopped and started again on the same port (a receiver that is down, then comes back)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sqlalchemy import select

from cogport.db.engine import Database
from cogport.db.tables import WebhookDelivery
from cogport.settings import Settings


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: str
    received: float
    """``time.monotonic()`` on arrival."""
    answered: int

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    @property
    def status(self) -> str:
        return str(self.json["status"])


class Receiver:
    """``url`` is fixed for the receiver's life; ``start()``/``stop()`` may be called again and again.

    ``answer(delivery_count) -> (status, headers)`` decides each response (default 200).
    """

    def __init__(self, answer: Callable[[int], tuple[int, dict[str, str]]] | None = None) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.answer = answer or (lambda _: (200, {}))
        self.deliveries: list[Delivery] = []
        self._lock = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
                with receiver._lock:
                    status, headers = receiver.answer(len(receiver.deliveries))
                    receiver.deliveries.append(
                        Delivery(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.monotonic(),
                            status,
                        )
                    )
                    receiver._lock.notify_all()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            request_queue_size = 128  # the sender opens up to target_concurrency connections at once

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def wait(self, predicate: Callable[[list[Delivery]], bool], timeout: float = 60) -> list[Delivery]:
        """Wait until ``predicate(deliveries)`` holds; returns a copy of the deliveries."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self.deliveries):
                remaining = deadline - time.monotonic()
                assert remaining > 0, (
                    f"webhooks not as expected: {[(d.answered, d.body[:80]) for d in self.deliveries]}"
                )
                self._lock.wait(min(remaining, 0.1))
            return list(self.deliveries)

    def wait_terminal(self, count: int = 1, timeout: float = 60) -> list[Delivery]:
        """Wait for ``count`` deliveries of a terminal prediction."""
        return self.wait(lambda ds: sum(d.status in TERMINAL for d in ds) >= count, timeout)


TERMINAL = {"succeeded", "failed", "canceled"}


def delivery_row(
    settings: Settings, prediction_id: str, until: Callable[[WebhookDelivery], bool], timeout: float = 60
) -> WebhookDelivery:
    """The prediction's terminal webhook row, once ``until(row)`` holds (read with a connection of our own)."""

    async def load() -> WebhookDelivery | None:
        database = Database(settings)
        try:
            async with database.session() as session:
                query = select(WebhookDelivery).where(WebhookDelivery.prediction_id == prediction_id)
                row: WebhookDelivery | None = (await session.execute(query)).scalar_one_or_none()
                return row
        finally:
            await database.dispose()

    deadline = time.monotonic() + timeout
    while True:
        row = asyncio.run(load())
        if row is not None and until(row):
            return row
        assert time.monotonic() < deadline, f"terminal webhook of {prediction_id}: {row and (row.status, row.attempts)}"
        time.sleep(0.05)


class HangingReceiver:
    """A webhook receiver that reads each request and never answers (until :meth:`stop`); it counts the
    requests read and those the sender gave up on (closed its end) while still unanswered."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/hook"
        self.requests = 0
        self.abandoned = 0
        self._lock = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._hold, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.2)
            data = b""
            while not self._stopping:
                try:
                    chunk = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:  # the sender closed its end: it gave up on what it sent
                    with self._lock:
                        self.abandoned += data.count(b"POST ")
                        self._lock.notify_all()
                    return
                data += chunk
                with self._lock:
                    self.requests += chunk.count(b"POST ")
                    self._lock.notify_all()

    def wait(self, predicate: Callable[[HangingReceiver], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"hanging receiver: {self.requests} requests, {self.abandoned} abandoned"
                self._lock.wait(min(remaining, 0.1))

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
