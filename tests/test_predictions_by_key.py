"""A prediction or training read by id uses the table's key, whatever the planner's statistics (issue 19).

On the previous main ``GET /v1/predictions/{id}`` asked ``WHERE id = ? AND account_id = ? AND kind = ?``;
PostgreSQL without fresh statistics (autovacuum off, as on the CI cluster) scanned the account's index
range instead of the key: 2.5x slower at 100k rows. The statements the GET sends are captured as they
reach the database (an engine event: observing, not replacing anything) and explained there, with the
table freshly filled and never analyzed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from cogport.db.engine import Database
from cogport.db.tables import Account, Prediction, utcnow
from cogport.identifiers import new_object_id
from tests.support.registry import add_version, create_model

OWNED = "admin/m"
ROWS = 3000


async def _fill(database: Database, vid: str) -> str:
    """``ROWS`` predictions of the admin account (no ANALYZE afterwards); returns one in the middle."""
    from sqlalchemy import select

    from cogport.db.tables import Version

    async with database.session() as session:
        admin = (await session.execute(select(Account).where(Account.username == "admin"))).scalar_one()
        version = (await session.execute(select(Version).where(Version.id == vid))).scalar_one()
        start = utcnow()
        ids = []
        for n in range(ROWS):
            ids.append(new_object_id())
            session.add(
                Prediction(
                    id=ids[-1],
                    account_id=admin.id,
                    model_id=version.model_id,
                    version_pk=version.pk,
                    model_ref=OWNED,
                    version_ref=vid,
                    input={},
                    status="succeeded",
                    kind="training" if n % 10 == 0 else "prediction",
                    created_at=start + timedelta(milliseconds=n),
                )
            )
        await session.commit()
    return ids[ROWS // 2 + 1]


@pytest.mark.parametrize("path", ["/v1/predictions/{id}", "/v1/trainings/{id}"])
async def test_get_by_id_uses_the_key(client: httpx.AsyncClient, database: Database, path: str) -> None:
    await create_model(client, "r8_admintoken0000000000000000000000000000", OWNED)
    vid = await add_version(database, OWNED)
    middle = await _fill(database, vid)
    async with database.session() as session:
        kind = (await session.get(Prediction, middle)).kind  # type: ignore[union-attr]
    target = middle if (kind == "training") == ("trainings" in path) else None

    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        # only the GET's own reads (the app's services share the engine and read the queue meanwhile)
        values = parameters if isinstance(parameters, (list, tuple)) else parameters.values()
        reads = "FROM predictions" in statement and statement.lstrip().upper().startswith("SELECT")
        if reads and middle in values:
            seen.append((statement, parameters))

    event.listen(database.engine.sync_engine, "before_cursor_execute", capture)
    try:
        response = await client.get(path.format(id=middle))
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", capture)
    assert response.status_code == (200 if target else 404), response.text
    assert seen, "the GET read no prediction"

    for statement, parameters in seen:
        plan = await _explain(database, statement, parameters)
        assert _uses_key(database, plan), f"{statement}\n{plan}"


async def _explain(database: Database, statement: str, parameters: Any) -> str:
    async with database.engine.connect() as conn:
        if database.dialect == "sqlite":
            driver = await conn.get_raw_connection()
            cursor = driver.driver_connection  # aiosqlite connection
            rows = await (await cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)).fetchall()
            return "\n".join(str(row[-1]) for row in rows)
        driver = (await conn.get_raw_connection()).driver_connection  # asyncpg connection
        schema = database.settings.database_schema
        if schema:
            await driver.execute(f'SET search_path TO "{schema}"')
        rows = await driver.fetch("EXPLAIN " + statement, *parameters)
        return "\n".join(row[0] for row in rows)


def _uses_key(database: Database, plan: str) -> bool:
    if database.dialect == "sqlite":
        return "PRIMARY KEY" in plan or "sqlite_autoindex_predictions_1" in plan or "USING INDEX pk" in plan
    return "predictions_pkey" in plan
