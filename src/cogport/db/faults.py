"""Which failures are an outage of the database or a full disk, and what they are called.

The drivers say it in many ways: asyncpg raises ``OSError`` (refused, reset) or its own connection and
shutdown errors, SQLAlchemy wraps them (``OperationalError``, ``InterfaceError``, an invalidated
connection) or times out on its pool; SQLite says ``database or disk is full`` (``SQLITE_FULL``) or that
it is busy or cannot open its file; a storage write fails with ``ENOSPC``. :func:`fault` reads the whole
chain of causes and answers with the error of :mod:`cogport.errors` a client gets (503 or 507, with no
driver text), or None for anything else (a bug: a 500).

These faults are transient: what failed may be done again once the database is back or space has been
freed (the recorder retries a run's end until it is written: see :mod:`cogport.lifecycle.recorder`).
"""

from __future__ import annotations

import errno
import socket
import sqlite3
from collections.abc import Iterator

from sqlalchemy import exc as sa

from cogport.errors import CogportError, DatabaseUnavailable, InsufficientStorage

__all__ = ["describe", "fault", "is_full", "is_outage"]

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_SQLITE_FULL = {sqlite3.SQLITE_FULL}
_SQLITE_UNAVAILABLE = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN}
_NETWORK_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ETIMEDOUT,
    errno.EPIPE,
    errno.ENOTCONN,
    errno.EADDRNOTAVAIL,
}
_PG_FULL = {"53100"}  # disk_full
_PG_UNAVAILABLE_CLASSES = ("08", "57P", "53300")  # connection exception, operator intervention, too many conns


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo.extend([current.__cause__, current.__context__, orig if isinstance(orig, BaseException) else None])


def is_full(exc: BaseException) -> bool:
    """A disk (the data dir, SQLite's, PostgreSQL's) is full."""
    for error in _chain(exc):
        if isinstance(error, OSError) and error.errno in _FULL_ERRNOS:
            return True
        if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) in _SQLITE_FULL:
            return True
        if str(getattr(error, "sqlstate", "")) in _PG_FULL:
            return True
    return False


def is_outage(exc: BaseException) -> bool:
    """The database cannot be reached or cannot work now (down, restarting, busy, its disk full): the
    same thing may succeed later. Errors of a statement itself (a constraint, bad SQL) are not."""
    if is_full(exc):
        return True
    for error in _chain(exc):
        if isinstance(error, sa.DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(error, sa.TimeoutError | sa.DisconnectionError | sa.InterfaceError):
            return True  # the pool gave up waiting; a connection that went away; one closed under us
        if isinstance(error, sqlite3.Error):
            return getattr(error, "sqlite_errorcode", None) in _SQLITE_UNAVAILABLE
        sqlstate = str(getattr(error, "sqlstate", "") or "")
        if sqlstate:
            return sqlstate.startswith(_PG_UNAVAILABLE_CLASSES)
        if isinstance(error, ConnectionError | socket.gaierror):
            return True
        if isinstance(error, OSError) and error.errno in _NETWORK_ERRNOS:
            return True  # asyncpg's connect: refused, unreachable, no route
        name = type(error).__name__
        if type(error).__module__.startswith("asyncpg") and ("Connection" in name or name == "InternalClientError"):
            # "connection is closed", ConnectionDoesNotExistError, and "cannot switch to state ...; another
            # operation is in progress" (a connection a reset left mid-protocol)
            return True
    return False


def fault(exc: BaseException) -> CogportError | None:
    """The error a client gets for ``exc`` when it is an outage (503) or a full disk (507); else None."""
    if is_full(exc):
        return InsufficientStorage()
    if is_outage(exc):
        return DatabaseUnavailable()
    return None


def describe(exc: BaseException) -> str:
    """A short name for a failure, the same for every repeat of it (the key of a throttled log line):
    the innermost cause's type and its first line, without SQLAlchemy's background link."""
    innermost = exc
    for error in _chain(exc):
        innermost = error
        if not isinstance(error, sa.SQLAlchemyError):
            break
    text = str(innermost).split("\n", 1)[0].split("(Background on this error", 1)[0].strip()
    return f"{type(innermost).__name__}: {text[:200]}" if text else type(innermost).__name__
