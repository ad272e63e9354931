"""The database engine, sessions and migrations.

The data layer (:mod:`cogport.ops`) flushes and never commits; whoever opens the transaction
(a request, a background job step, the group writer) commits it, via :meth:`Database.session`.
Code inside a transaction that must act once it is durable (announce a status change) registers a
callback with :func:`on_commit`: it runs right after the commit, and never after a rollback.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from cogport.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "d8a4f2c6e1b3"
"""The newest migration in ``migrations/versions`` (tests/test_start.py checks it is Alembic's head): a
database already at it starts without importing or running Alembic."""
AFTER_COMMIT = "cogport.after_commit"

log = logging.getLogger(__name__)


def on_commit(session: AsyncSession, callback: Callable[[], None]) -> None:
    """Run ``callback`` (synchronous, must not block) once the session's transaction has committed."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


def run_after_commit(session: AsyncSession) -> None:
    """Run (and forget) the callbacks registered with :func:`on_commit`; each error is logged."""
    for callback in session.info.pop(AFTER_COMMIT, ()):
        try:
            callback()
        except Exception:
            log.exception("an after-commit callback failed")


def discard_after_commit(session: AsyncSession) -> None:
    session.info.pop(AFTER_COMMIT, None)


class LazySession:
    """Stands for the session ``factory`` makes, which it makes at the first use of any of its attributes."""

    __slots__ = ("factory", "made")

    def __init__(self, factory: Callable[[], AsyncSession]) -> None:
        self.factory = factory
        self.made: AsyncSession | None = None

    def __getattr__(self, name: str) -> Any:
        if self.made is None:
            self.made = self.factory()
        return getattr(self.made, name)


class Database:
    """Owns the engine and the session factory of one app instance."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        url = settings.sqlalchemy_url
        kwargs: dict[str, Any] = {}
        kwargs["pool_size"] = 20
        kwargs["max_overflow"] = 20
        if settings.is_sqlite:
            kwargs["connect_args"] = {"timeout": 30}
        else:
            server_settings = {"application_name": "cogport"}
            if settings.database_schema:
                server_settings["search_path"] = settings.database_schema
            kwargs["connect_args"] = {"server_settings": server_settings}
        self.engine: AsyncEngine = create_async_engine(url, pool_pre_ping=not settings.is_sqlite, **kwargs)
        if settings.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction, committed on success and rolled back on error.
        Callbacks registered with :func:`on_commit` run after the commit."""
        async with self.sessions() as session:
            try:
                async with session.begin():
                    yield session
            except BaseException:
                discard_after_commit(session)
                raise
            run_after_commit(session)

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[AsyncSession]:
        """A session for reads only: made at its first use and no transaction begun until a statement runs
        (a read answered from caches costs nothing: a session made and closed costs ~50 us), nothing
        committed."""
        lazy = LazySession(self.sessions)
        try:
            yield cast(AsyncSession, lazy)
        finally:
            if lazy.made is not None:
                await lazy.made.close()

    async def migrate(self) -> None:
        """Create the schema (if asked) and apply every Alembic migration; a database already at :data:`HEAD`
        (every start but the first after an upgrade) is only read, Alembic is not even imported."""
        if self.settings.is_sqlite:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        async with self.engine.begin() as conn:
            if self.settings.database_schema and not self.settings.is_sqlite:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.settings.database_schema}"'))
            if await conn.run_sync(revisions) != [HEAD]:
                await conn.run_sync(_upgrade)

    async def dispose(self) -> None:
        await self.engine.dispose()


def revisions(connection: Connection) -> list[str]:
    """The revisions Alembic's version table holds (none on a fresh database)."""
    if not inspect(connection).has_table("alembic_version"):
        return []
    return list(connection.scalars(text("SELECT version_num FROM alembic_version")))


def _upgrade(connection: Connection) -> None:
    # Alembic is imported here, not at the top: a third of a second at start, needed only when migrating.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
