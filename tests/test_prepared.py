"""db/prepared.py: a statement run at the driver level stores exactly what SQLAlchemy's ``conn.execute`` stores.

Real SQLite databases with cogport's tables; every value family the hot path writes (any JSON input and
output, aware timestamps in any zone, text with any code point, NULLs), the compare-and-set's row counts,
an UPDATE's SET clause per set of columns, and the refusal of statements it cannot run itself.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, Table, bindparam, create_engine, insert, select, update
from sqlalchemy.engine import Engine

from cogport.db.prepared import Prepared
from cogport.db.tables import Base, Prediction

PREDICTIONS = cast(Table, Prediction.__table__)
COLUMNS = [column.key for column in PREDICTIONS.columns]

_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    _json_leaf,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])
moments = st.builds(
    lambda naive, zone: naive.replace(tzinfo=UTC).astimezone(zone),
    st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1)),
    zones,
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_engine(f"sqlite:///{tmp_path / 'prepared.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def row_values(run_id: str, **values: Any) -> dict[str, Any]:
    now = datetime(2026, 12, 3, 8, 0, 0, 123456, tzinfo=UTC)
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(
        id=run_id,
        kind="prediction",
        account_id=1,
        model_id=2,
        version_pk=3,
        model_ref="owner/model",
        version_ref="v" * 64,
        input={},
        logs="",
        status="starting",
        source="api",
        created_at=now,
        metrics={},
        data_removed=False,
        cancel_requested=False,
        attempts=0,
    )
    row.update(values)
    return {key: row[key] for key in COLUMNS}


def read(conn: Connection, run_id: str) -> dict[str, Any]:
    found = conn.execute(select(PREDICTIONS).where(PREDICTIONS.c.id == run_id)).mappings().one()
    return dict(found)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return bool(a == b)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    model_input=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    output=json_values,
    logs=st.text(),
    error=st.none() | st.text(),
    created=moments,
    started=st.none() | moments,
    metrics=st.dictionaries(st.text(max_size=8), st.floats(allow_nan=False, allow_infinity=False), max_size=3),
)
def test_an_insert_stores_what_sqlalchemy_stores(
    engine: Engine,
    model_input: dict[str, Any],
    output: Any,
    logs: str,
    error: str | None,
    created: datetime,
    started: datetime | None,
    metrics: dict[str, float],
) -> None:
    values = {"input": model_input, "output": output, "logs": logs, "error": error, "metrics": metrics}
    values |= {"created_at": created, "started_at": started}
    prepared = Prepared(insert(PREDICTIONS))
    with engine.begin() as conn:
        conn.execute(PREDICTIONS.delete())
        conn.execute(insert(PREDICTIONS), row_values("by-sqlalchemy", **values))
        assert prepared.execute(conn, row_values("by-driver", **values)) == 1
        theirs, ours = read(conn, "by-sqlalchemy"), read(conn, "by-driver")
    theirs.pop("id"), ours.pop("id")
    assert theirs.keys() == ours.keys()
    for key in theirs:
        assert same(theirs[key], ours[key]), (key, theirs[key], ours[key])
    assert ours["created_at"] == created and ours["created_at"].tzinfo is not None  # the instant, read back in UTC


def test_a_write_is_part_of_the_transaction_it_runs_in(engine: Engine) -> None:
    prepared = Prepared(insert(PREDICTIONS))
    with engine.connect() as conn:
        with conn.begin() as transaction:
            prepared.execute(conn, row_values("rolled-back"))
            transaction.rollback()
        with conn.begin():
            prepared.execute(conn, row_values("committed"))
    with engine.connect() as conn:
        ids = set(conn.scalars(select(PREDICTIONS.c.id)))
    assert ids == {"committed"}


def test_compare_and_set_counts_the_rows_it_changed(engine: Engine) -> None:
    cas = Prepared(
        update(PREDICTIONS).where(PREDICTIONS.c.id == bindparam("cas_id"), PREDICTIONS.c.status == bindparam("cas_was"))
    )
    with engine.begin() as conn:
        conn.execute(insert(PREDICTIONS), row_values("run"))
        assert cas.execute(conn, {"cas_id": "run", "cas_was": "starting", "status": "processing"}) == 1
        assert cas.execute(conn, {"cas_id": "run", "cas_was": "starting", "status": "failed"}) == 0  # moved on
        # another set of columns is another SET clause, compiled on its own
        done = {"cas_id": "run", "cas_was": "processing", "status": "succeeded", "output": [1, "two"], "logs": "x"}
        assert cas.execute(conn, done) == 1
        assert cas.execute(conn, {"cas_id": "missing", "cas_was": "processing", "status": "failed"}) == 0
        row = read(conn, "run")
    assert (row["status"], row["output"], row["logs"]) == ("succeeded", [1, "two"], "x")


def test_values_fixed_in_the_statement_are_bound(engine: Engine) -> None:
    """A bind the caller does not name (the ``+ 1`` of a counter) takes the statement's own value."""
    bump = Prepared(
        update(PREDICTIONS).where(PREDICTIONS.c.id == bindparam("run")).values(attempts=PREDICTIONS.c.attempts + 1)
    )
    with engine.begin() as conn:
        conn.execute(insert(PREDICTIONS), row_values("run"))
        assert bump.execute(conn, {"run": "run"}) == 1
        assert bump.execute(conn, {"run": "run"}) == 1
        assert read(conn, "run")["attempts"] == 2


def test_statements_it_cannot_run_itself_are_refused(engine: Engine) -> None:
    expanding = Prepared(update(PREDICTIONS).where(PREDICTIONS.c.status.in_(["starting", "processing"])))
    with engine.begin() as conn, pytest.raises(TypeError, match="expanding"):
        expanding.execute(conn, {"logs": "x"})
