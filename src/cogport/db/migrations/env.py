"""Alembic environment: migrations run on the connection cogport hands over."""

from __future__ import annotations

from alembic import context

from cogport.db.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only via `alembic` CLI without cogport
    raise RuntimeError("cogport runs its migrations itself (cogport.db.engine.Database.migrate)")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
