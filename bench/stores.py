"""Where a benchmark reads cogport's rows: the server's SQLite file, or a PostgreSQL schema of the run's own.

Reading the database directly (rather than polling the API) means that watching a burst adds no requests to
the server under test. :func:`open_store` picks the kind from ``--database-url``; a PostgreSQL store makes a
fresh schema name for the run (cogport creates the schema at start-up) and drops the schema when closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})


class Store(Protocol):
    kind: str
    """``SQLite`` or ``PostgreSQL``, for the report."""
    server_env: dict[str, str]
    """What ``cogport serve`` needs in its environment to use this database."""

    def version_paths(self, version: str) -> tuple[str, str]:
        """The version's ``(source_path, venv_path)``."""
        ...

    def status_counts(self, ids: list[str]) -> dict[str, int]:
        """How many of ``ids`` are in each status (ids with no row are not counted)."""
        ...

    def active(self) -> int:
        """How many predictions are not terminal yet."""
        ...


class SqliteStore:
    kind = "SQLite"

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "cogport.db"
        self.server_env: dict[str, str] = {}

    def _fetch(self, sql: str, *params: Any) -> list[Any]:
        # A new connection each time: no transaction (and no snapshot) outlives one read.
        with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as db:
            return db.execute(sql, params).fetchall()

    def version_paths(self, version: str) -> tuple[str, str]:
        ((source, venv),) = self._fetch("select source_path, venv_path from versions where id = ?", version)
        return str(source), str(venv)

    def status_counts(self, ids: list[str]) -> dict[str, int]:
        sql = "select status, count(*) from predictions where id in (select value from json_each(?)) group by status"
        return {str(status): int(count) for status, count in self._fetch(sql, json.dumps(ids))}

    def active(self) -> int:
        ((count,),) = self._fetch("select count(*) from predictions where status in ('starting', 'processing')")
        return int(count)


class PostgresStore:
    kind = "PostgreSQL"

    def __init__(self, url: str) -> None:
        self.url = url
        self.schema = f"bench_{uuid.uuid4().hex[:12]}"
        self.server_env = {"COGPORT_DATABASE_URL": url, "COGPORT_DATABASE_SCHEMA": self.schema}
        self._loop = asyncio.Runner()  # one loop for the whole run, so one connection serves every read
        self._connection: Any = None

    async def _fetch(self, sql: str, *params: Any) -> list[Any]:
        import asyncpg  # type: ignore[import-untyped]

        if self._connection is None:
            self._connection = await asyncpg.connect(self.url, server_settings={"search_path": self.schema})
        rows: list[Any] = await self._connection.fetch(sql, *params)
        return rows

    def version_paths(self, version: str) -> tuple[str, str]:
        (row,) = self._loop.run(self._fetch("select source_path, venv_path from versions where id = $1", version))
        return str(row["source_path"]), str(row["venv_path"])

    def status_counts(self, ids: list[str]) -> dict[str, int]:
        sql = "select status::text, count(*) from predictions where id = any($1::text[]) group by status"
        return {str(status): int(count) for status, count in self._loop.run(self._fetch(sql, ids))}

    def active(self) -> int:
        sql = "select count(*) from predictions where status in ('starting', 'processing')"
        ((count,),) = self._loop.run(self._fetch(sql))
        return int(count)

    def close(self) -> None:
        """Drop the run's schema (and everything in it)."""
        self._loop.run(self._fetch(f'drop schema if exists "{self.schema}" cascade'))
        self._loop.run(self._connection.close())
        self._loop.close()


@contextlib.contextmanager
def open_store(database_url: str | None, data_dir: Path) -> Iterator[Store]:
    """A SQLite store on ``data_dir`` when ``database_url`` is empty, else a PostgreSQL store, dropped at the end."""
    if not database_url:
        yield SqliteStore(data_dir)
        return
    store = PostgresStore(database_url)
    try:
        yield store
    finally:
        store.close()


def wait_all(store: Store, ids: list[str], limit_s: float, poll_s: float = 0.2) -> dict[str, int]:
    """Wait until every one of ``ids`` is terminal (or ``limit_s`` passes); the count per status, plus ``missing``."""
    deadline = time.monotonic() + limit_s
    while True:
        counts = store.status_counts(ids)
        if sum(v for k, v in counts.items() if k in TERMINAL) == len(ids) or time.monotonic() > deadline:
            counts["missing"] = len(ids) - sum(counts.values())
            return counts
        time.sleep(poll_s)


def wait_idle(store: Store, limit_s: float, poll_s: float = 0.2) -> None:
    """Wait until no prediction is left to run (or ``limit_s`` passed)."""
    deadline = time.monotonic() + limit_s
    while store.active() and time.monotonic() < deadline:
        time.sleep(poll_s)
