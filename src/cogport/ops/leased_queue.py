"""A table used as a durable queue with leases: the one mechanism under runs and builds.

A row waits (``queued``); a holder claims it with a lease (``lease_expires_at``), renews the lease while it
works, and gives the row back (``release``) or ends it; a row whose lease ran out is its holder's no more
(``expired``): the holder's process died, and someone else recovers it. Two queues use it:

* runs (:mod:`cogport.ops.predictions`): queued is ``status = starting`` and ``claimed_by IS NULL``; a claim
  names the node in ``claimed_by`` and counts an attempt; the status stays ``starting`` until the model starts;
* builds (:mod:`cogport.ops.builds`): queued is ``status = starting``; a claim moves the build to
  ``processing`` (who holds it is not recorded: the builder that claimed it renews it).

Every change is one compare-and-set ``UPDATE``: it names the rows and repeats the condition they must
still meet (queued, for a claim; held, for a renewal or a release), so of two holders racing for a row one
gets it, with no lock held between statements. Claims go in batches: one ``UPDATE … WHERE id IN (…) AND
<queued> RETURNING id`` takes those nobody took first. Statements are built here and run by the caller,
in its own transaction (the writer's ``Tx`` for runs, an ``AsyncSession`` for builds).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, Table, Update, or_, select, update

from cogport.db.tables import utcnow

__all__ = ["LeasedQueue"]


@dataclass(frozen=True)
class LeasedQueue:
    """The queue in ``table`` (an ``id`` primary key, ``created_at``, ``lease_expires_at``); ``queued``:
    the condition of a row waiting to be claimed."""

    table: Table
    queued: ColumnElement[bool]

    def oldest(self, limit: int, *, skip_locked: bool = False) -> Select[Any]:
        """The ids of the ``limit`` oldest queued rows; ``skip_locked`` (PostgreSQL) passes over rows another
        transaction has locked, so that concurrent claimers look at different rows."""
        c = self.table.c
        query = select(c.id).where(self.queued).order_by(c.created_at, c.id).limit(limit)
        return query.with_for_update(skip_locked=True) if skip_locked else query

    def claim(self, ids: Collection[str], lease: float, *, now: datetime | None = None, **values: Any) -> Update:
        """Take the rows of ``ids`` that are still queued, for ``lease`` seconds, setting ``values`` too;
        ``RETURNING id``: the ids taken."""
        c = self.table.c
        return (
            update(self.table)
            .where(c.id.in_(ids), self.queued)
            .values(lease_expires_at=(now or utcnow()) + timedelta(seconds=lease), **values)
            .returning(c.id)
        )

    def renew(self, ids: Collection[str], lease: float, held: ColumnElement[bool], **values: Any) -> Update:
        """Extend the lease of those of ``ids`` still ``held`` (by the caller: its condition), setting
        ``values`` too; the row count says how many still were."""
        return (
            update(self.table)
            .where(self.table.c.id.in_(ids), held)
            .values(lease_expires_at=utcnow() + timedelta(seconds=lease), **values)
        )

    def release(self, ids: Collection[str], held: ColumnElement[bool], **values: Any) -> Update:
        """Give back those of ``ids`` still ``held``: no lease, and ``values`` (what makes them queued again)."""
        return update(self.table).where(self.table.c.id.in_(ids), held).values(lease_expires_at=None, **values)

    def expired(self, held: ColumnElement[bool], *, also: ColumnElement[bool] | None = None) -> ColumnElement[bool]:
        """Rows ``held`` whose lease ran out (their holder is presumably gone), or that meet ``also`` (held
        rows to recover whatever their lease: a restarted holder's own)."""
        ran_out = self.table.c.lease_expires_at < utcnow()
        return held & (ran_out if also is None else or_(ran_out, also))
