"""Hot-path statements run at the driver level on SQLite.

``conn.execute(statement, parameters)`` costs SQLAlchemy an execution context, a compile-cache lookup and
result set-up per call: 20-40 us for each of the two or three statements of a run's end write, in the
writer's thread, on every prediction. :class:`Prepared` compiles a statement once per set of parameter
names, converts the values with SQLAlchemy's own bind processors (so a value is stored exactly as
``conn.execute`` would store it: JSON, timestamps, ``TypeDecorator``s) and runs it on the connection's DBAPI
connection, inside the transaction SQLAlchemy holds there (the sqlite3 driver begins it before the first
write, as for any statement). On other databases it is ``conn.execute``: asyncpg's adaptation is not worth
bypassing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.sql.dml import UpdateBase

__all__ = ["Prepared"]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    """The bind parameters in the order of the SQL's ``?`` placeholders."""
    processors: Mapping[str, Callable[[Any], Any]]
    defaults: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None
    """The compiled statement's own ``construct_params`` (the parameters with defaults and fixed values added),
    or ``None`` when the parameters name every bind already (an INSERT of whole rows, the CAS UPDATE)."""


class Prepared:
    """One INSERT/UPDATE/DELETE, compiled for SQLite once per set of parameter names (an UPDATE's SET
    clause is the columns it is run with)."""

    def __init__(self, statement: UpdateBase) -> None:
        self.statement = statement
        self._compiled: dict[frozenset[str], _Compiled] = {}

    def execute(self, conn: Connection, parameters: Mapping[str, Any]) -> int:
        """Run the statement with ``parameters`` in ``conn``'s transaction; the number of rows it matched."""
        if conn.dialect.name != "sqlite":
            return int(conn.execute(self.statement, dict(parameters)).rowcount)
        compiled = self._compiled.get(frozenset(parameters))
        if compiled is None:
            compiled = self._compile(conn, parameters)
        values = parameters if compiled.defaults is None else compiled.defaults(parameters)
        processors = compiled.processors
        row = [processors[name](values[name]) if name in processors else values[name] for name in compiled.names]
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None  # a Connection in a transaction holds its DBAPI connection
        cursor = dbapi.cursor()
        try:
            cursor.execute(compiled.sql, row)
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def _compile(self, conn: Connection, parameters: Mapping[str, Any]) -> _Compiled:
        compiled = self.statement.compile(dialect=conn.dialect, column_keys=list(parameters))
        processors: dict[str, Callable[[Any], Any]] = {}
        for name, processor in compiled._bind_processors.items():
            if not callable(processor):  # a tuple IN's processors: not a statement of the hot path
                raise TypeError(f"{self.statement} binds a tuple; run it with conn.execute")
            processors[name] = processor
        if compiled.positiontup is None or compiled.literal_execute_params or compiled.post_compile_params:
            raise TypeError(f"{self.statement} needs SQLAlchemy's execution (expanding or literal parameters)")
        names = tuple(compiled.positiontup)
        complete = set(names) <= set(parameters)
        entry = _Compiled(
            sql=compiled.string,
            names=names,
            processors=processors,
            defaults=None if complete else lambda values: compiled.construct_params(dict(values), _check=False),
        )
        self._compiled[frozenset(parameters)] = entry
        return entry
