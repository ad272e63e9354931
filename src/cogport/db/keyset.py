"""Keyset (cursor) pagination: stable while rows are inserted, unlike OFFSET.

A page is ordered by ``(sort_column, tiebreak_column)``. A cursor holds the key of the row it
starts after, plus its direction (``next`` or ``previous``). The API layer turns cursors into
opaque strings; see :mod:`cogport.api.pagination`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from sqlalchemy import Select, literal, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.errors import InvalidCursor

Direction = Literal["next", "previous"]
T = TypeVar("T")


@dataclass(frozen=True)
class Cursor:
    key: tuple[Any, Any]
    direction: Direction = "next"


@dataclass
class KeysetPage(Generic[T]):
    rows: list[T]
    next: Cursor | None
    previous: Cursor | None


async def paginate(
    session: AsyncSession,
    query: Select[Any],
    *,
    sort: Any,
    tiebreak: Any,
    descending: bool = True,
    cursor: Cursor | None = None,
    limit: int = 100,
    key_of: Callable[[T], tuple[Any, Any]],
) -> KeysetPage[T]:
    """Run ``query`` one page at a time.

    ``sort`` and ``tiebreak`` are non-NULL column expressions; ``key_of(row)`` gives their values.
    """
    if cursor is not None:
        _check_key(cursor.key, (sort, tiebreak))
    backwards = cursor is not None and cursor.direction == "previous"
    # Walking backwards means reading the opposite order and flipping the page.
    read_descending = descending != backwards
    if cursor is not None:
        query = query.where(_after(sort, tiebreak, cursor.key, read_descending))
    order = (sort.desc(), tiebreak.desc()) if read_descending else (sort.asc(), tiebreak.asc())
    result = await session.execute(query.order_by(*order).limit(limit + 1))
    rows = list(result.scalars().all())
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
    next_cursor = prev_cursor = None
    if rows:
        # Forwards, there is a next page when we read more than a page; backwards, there always is
        # (the page we came from). The mirror image holds for the previous page.
        if more or backwards:
            next_cursor = Cursor(key_of(rows[-1]), "next")
        if cursor is not None and (more or not backwards):
            prev_cursor = Cursor(key_of(rows[0]), "previous")
    return KeysetPage(rows=rows, next=next_cursor, previous=prev_cursor)


def _check_key(key: tuple[Any, Any], columns: tuple[Any, Any]) -> None:
    """A cursor decodes to any well-formed key; it fits this list only if each value is of its column's type
    (a time for ``created_at``, an integer or a string id), else it was written for another list or forged."""
    for value, column in zip(key, columns, strict=True):
        expected = column.type.python_type
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise InvalidCursor()


def _after(sort: Any, tiebreak: Any, key: tuple[Any, Any], descending: bool) -> Any:
    # Bind the key with the columns' own types, so that it is stored-format compatible (UTC on SQLite).
    bound = tuple_(literal(key[0], sort.type), literal(key[1], tiebreak.type))
    if descending:
        return tuple_(sort, tiebreak) < bound
    return tuple_(sort, tiebreak) > bound
