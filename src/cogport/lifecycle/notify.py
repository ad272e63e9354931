"""Changes and cancels across API processes: PostgreSQL ``LISTEN``/``NOTIFY`` behind the hub.

Several API processes may share one PostgreSQL database behind a load balancer; a prediction runs in
the process that claimed it, but its stream, a wait for it or a cancel of it may reach any other. The
:class:`Notifier` of each process:

* hears every change this process commits (an after-commit hook of
  :class:`~cogport.lifecycle.status.Transitions`: ``start``, ``logs``, ``output``, ``completed``) and
  ``NOTIFY``\\ s it on the changes channel;
* hears the cancels this process asks of another (``Runs.cancel`` set ``cancel_requested`` on a run
  claimed elsewhere) and ``NOTIFY``\\ s them on the cancels channel;
* ``LISTEN``\\ s on both and republishes the changes of other processes into its own hub (waiters there
  read the row again; streams hear of it from the process's watcher, lifecycle/watch.py, which reads
  the row once for all of them), and hands the cancels to the dispatcher (which cancels
  the run at once if it runs here).

Payloads carry ids only (readers read the row): ``<sender node>`` on the first line, then one
``<kind> <prediction id>`` (changes) or ``<prediction id>`` (cancels) per line, as many as fit in
``MAX_PAYLOAD`` bytes (PostgreSQL refuses 8000 and more). What is queued while a ``NOTIFY`` is under way
goes in the next one: one statement carries a batch, as the group writer's commits do.

Everything goes through one connection of its own (asyncpg, outside the engine's pool). When it drops,
the notifier connects again (backing off up to ``MAX_BACKOFF``) and then asks the dispatcher for a
housekeeping round (cancels sent meanwhile); streams and waiters read the row on a timer anyway, so a
lost notification only delays them. Channels are per database schema (``COGPORT_DATABASE_SCHEMA``): two
stores in one database do not hear each other.

On SQLite (one process by nature) the notifier is disabled: it connects to nothing and sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

from sqlalchemy.engine import make_url

from cogport.core.backoff import doubling
from cogport.lifecycle.hub import Change, EventKind, Hub
from cogport.lifecycle.status import Announcement
from cogport.settings import Settings

__all__ = ["MAX_PAYLOAD", "Notifier", "channel_names", "payloads"]

log = logging.getLogger(__name__)

MAX_PAYLOAD = 7900
"""Bytes per ``NOTIFY`` payload (PostgreSQL's limit is 8000)."""
HEALTH_CHECK = 10.0
"""Seconds between checks that an idle connection still answers."""
CONNECT_TIMEOUT = 5.0
MAX_PENDING = 100_000
"""Lines kept per channel while the connection is down."""
FIRST_BACKOFF = 0.1
MAX_BACKOFF = 5.0
KINDS: frozenset[str] = frozenset({"start", "output", "logs", "completed"})

CancelHandler = Callable[[str], Awaitable[None]]


def channel_names(schema: str | None) -> tuple[str, str]:
    """The changes and cancels channels of a store (per schema; at most 63 bytes, PostgreSQL's limit)."""
    suffix = ""
    if schema:
        suffix = "_" + (schema if len(schema) <= 40 else hashlib.sha256(schema.encode()).hexdigest()[:40])
    return f"cogport_changes{suffix}", f"cogport_cancels{suffix}"


def _dsn(settings: Settings) -> str:
    return make_url(settings.sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


def payloads(node: str, lines: list[str]) -> list[str]:
    """``lines`` under a ``node`` header, split so that no payload exceeds ``MAX_PAYLOAD`` bytes."""
    out: list[str] = []
    batch: list[str] = []
    header = len(node.encode()) + 1
    size = header
    for line in lines:
        length = len(line.encode()) + 1
        if batch and size + length > MAX_PAYLOAD:
            out.append("\n".join([node, *batch]))
            batch, size = [], header
        batch.append(line)
        size += length
    if batch:
        out.append("\n".join([node, *batch]))
    return out


class Notifier:
    """One per app (owned by its lifespan): see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        hub: Hub,
        *,
        node: str,
        on_cancel: CancelHandler,
        on_reconnect: Callable[[], None],
    ) -> None:
        self.enabled = not settings.is_sqlite
        self.settings = settings
        self.hub = hub
        self.node = node
        self.on_cancel = on_cancel
        self.on_reconnect = on_reconnect
        self.changes_channel, self.cancels_channel = channel_names(settings.database_schema)
        self._pending: dict[str, dict[str, None]] = {self.changes_channel: {}, self.cancels_channel: {}}
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._conn: Any = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    # --- what this process announces ------------------------------------------------------------

    def after_commit(self, announcement: Announcement) -> None:
        """The Transitions hook: tell the other processes of a committed change."""
        self._queue(self.changes_channel, f"{announcement.kind} {announcement.prediction.id}")

    def cancel(self, prediction_id: str) -> None:
        """Tell the process running ``prediction_id`` to cancel it (its ``cancel_requested`` is committed)."""
        self._queue(self.cancels_channel, prediction_id)

    def _queue(self, channel: str, line: str) -> None:
        if self.enabled:
            pending = self._pending[channel]
            if len(pending) >= MAX_PENDING:  # disconnected for long: the oldest are dropped (readers poll)
                del pending[next(iter(pending))]
            pending[line] = None
            self._wake.set()

    # --- the connection -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and listen (waits for the first connection, briefly), then run in the background."""
        if not self.enabled:
            return
        self._task = asyncio.create_task(self._run(), name="cogport-notifier")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), timeout=CONNECT_TIMEOUT)

    async def close(self) -> None:
        """Stop listening, send what is still queued (the last writes of this process), disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._handlers):
            task.cancel()
        if self.connected:
            with contextlib.suppress(Exception):
                await self._send(self._conn)
        await self._disconnect()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def _run(self) -> None:
        delays = doubling(FIRST_BACKOFF, MAX_BACKOFF)
        first = True
        while True:
            error: Exception | None = None
            try:
                await self._connect()
                delays = doubling(FIRST_BACKOFF, MAX_BACKOFF)  # connected: the next loss waits the least again
                if not first:
                    log.info("notifier: connected again")
                    self.on_reconnect()  # cancels sent while this process was not listening
                first = False
                await self._serve()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = exc
            delay = next(delays)
            if error is not None:
                log.warning("notifier: connection lost or refused (%s); retrying in %.1f s", error, delay)
            await self._disconnect()
            await asyncio.sleep(delay)

    async def _connect(self) -> None:
        import asyncpg  # here, not at the top: only PostgreSQL listens, and SQLite starts without it

        conn = await asyncpg.connect(
            _dsn(self.settings),
            timeout=CONNECT_TIMEOUT,
            server_settings={"application_name": "cogport-notify"},
        )
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        await conn.add_listener(self.changes_channel, self._received)
        await conn.add_listener(self.cancels_channel, self._received)
        self._conn, self._lost = conn, lost
        self._connected.set()
        self._wake.set()  # anything queued while disconnected

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._connected.clear()
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=1.0)
        if conn is not None:
            conn.terminate()

    async def _serve(self) -> None:
        """Send what is queued, batch by batch, until the connection is lost."""
        conn, lost = self._conn, self._lost
        while True:
            waiter = asyncio.ensure_future(self._wake.wait())
            dropped = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({waiter, dropped}, timeout=HEALTH_CHECK, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                dropped.cancel()
            if lost.is_set() or conn.is_closed():
                raise ConnectionError("the connection closed")
            if not self._wake.is_set():
                await asyncio.wait_for(conn.execute("SELECT 1"), timeout=CONNECT_TIMEOUT)
                continue
            self._wake.clear()
            await self._send(conn)

    async def _send(self, conn: Any) -> None:
        channels: list[str] = []
        bodies: list[str] = []
        taken = {channel: list(lines) for channel, lines in self._pending.items() if lines}
        for channel in taken:
            self._pending[channel] = {}
            for body in payloads(self.node, taken[channel]):
                channels.append(channel)
                bodies.append(body)
        if not bodies:
            return
        try:
            await asyncio.wait_for(
                conn.execute("SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)", channels, bodies),
                timeout=CONNECT_TIMEOUT,
            )
        except BaseException:
            for channel, lines in taken.items():  # sent again once connected (readers read rows again)
                self._pending[channel] = dict.fromkeys(lines) | self._pending[channel]
            raise

    # --- what other processes announce ----------------------------------------------------------

    def _received(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        node, _, body = payload.partition("\n")
        if node == self.node:
            return  # this process's own: its hub heard of it already
        for line in body.split("\n"):
            if not line:
                continue
            if channel == self.cancels_channel:
                self._handle_cancel(line)
                continue
            kind, _, prediction_id = line.partition(" ")
            if kind in KINDS and prediction_id:
                # No data: the stream or waiter reads the row (as written by the process running it).
                self.hub.publish(Change(prediction_id, cast(EventKind, kind)))

    def _handle_cancel(self, prediction_id: str) -> None:
        task = asyncio.get_running_loop().create_task(self._cancel(prediction_id))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _cancel(self, prediction_id: str) -> None:
        try:
            await self.on_cancel(prediction_id)
        except Exception:
            log.exception("notifier: canceling %s failed", prediction_id)
