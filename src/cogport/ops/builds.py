"""Builds: the durable queue of pushes (``starting`` → ``processing`` → ``succeeded`` | ``failed``).

A builder claims the oldest ``starting`` build with a lease (``lease_expires_at``) and renews it while it
works, saving the log each time. A build whose lease ran out (its process died) goes back to the queue,
at most :data:`MAX_INTERRUPTIONS` times, then fails with a message saying why. The queue is a
:class:`~cogport.ops.leased_queue.LeasedQueue`, as the runs' is.
"""

from __future__ import annotations

from enum import StrEnum
from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.db.tables import Build, Model, Version, utcnow
from cogport.errors import NotFound
from cogport.identifiers import new_object_id
from cogport.ops.leased_queue import LeasedQueue
from cogport.ops.principals import Principal


class BuildStatus(StrEnum):
    """A build's status (``Build.status``): the same words as a prediction's, a smaller set."""

    STARTING = "starting"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


STARTING, PROCESSING, SUCCEEDED, FAILED = (
    BuildStatus.STARTING,
    BuildStatus.PROCESSING,
    BuildStatus.SUCCEEDED,
    BuildStatus.FAILED,
)
"""Short names the builder and its tests use."""
INTERRUPTED = "cogport: this build was interrupted (its server died); building again"
RELEASED = "cogport: the server stopped during this build; it will build again"
MAX_INTERRUPTIONS = 2
_BUILDS = cast(Table, Build.__table__)
BUILDS = LeasedQueue(_BUILDS, _BUILDS.c.status == STARTING)
"""The durable queue of builds (:mod:`cogport.ops.leased_queue`): queued while ``starting``."""
_HELD = _BUILDS.c.status == PROCESSING
"""A claimed build: ``processing`` (its builder renews its lease)."""


async def create(
    session: AsyncSession,
    model: Model,
    account_id: int,
    *,
    version_id: str,
    content_id: str | None = None,
    source_path: str | None,
    status: BuildStatus = STARTING,
    logs: str = "",
    error: str | None = None,
) -> Build:
    now = utcnow()
    finished = status in (SUCCEEDED, FAILED)
    build = Build(
        id=new_object_id(),
        model_id=model.id,
        account_id=account_id,
        status=status,
        logs=logs,
        error=error,
        version_id=version_id,
        content_id=content_id,
        source_path=source_path,
        created_at=now,
        started_at=now if finished else None,
        completed_at=now if finished else None,
    )
    session.add(build)
    await session.flush()
    return build


async def get_visible(session: AsyncSession, principal: Principal, build_id: str) -> tuple[Build, Model]:
    """A build its pusher, the model's owner (or its org members) or an admin may see; else 404."""
    row = (
        await session.execute(select(Build, Model).join(Model, Model.id == Build.model_id).where(Build.id == build_id))
    ).one_or_none()
    if row is None:
        raise NotFound("Build not found")
    build, model = row[0], row[1]
    if not (principal.is_admin or principal.can_act_for(model.owner_id) or build.account_id == principal.id):
        raise NotFound("Build not found")
    return build, model


async def claim_next(session: AsyncSession, lease_seconds: float) -> Build | None:
    """Take the oldest queued build (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, a guarded update anywhere)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    build_id = (await session.execute(BUILDS.oldest(1, skip_locked=postgres))).scalar_one_or_none()
    if build_id is None:
        return None
    now = utcnow()
    claim = BUILDS.claim([build_id], lease_seconds, now=now, status=PROCESSING, started_at=now)
    if not (await session.execute(claim)).scalars().all():
        return None
    return await session.get(Build, build_id, populate_existing=True)


async def renew(session: AsyncSession, build_id: str, logs: str, lease_seconds: float) -> bool:
    """Save the log and extend the lease; False when the build is no longer ours to run."""
    result = await session.execute(BUILDS.renew([build_id], lease_seconds, _HELD, logs=logs))
    return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def finish(
    session: AsyncSession,
    build_id: str,
    *,
    status: str,
    logs: str,
    error: str | None = None,
    source_path: str | None = None,
) -> None:
    values: dict[str, object] = {"status": status, "logs": logs, "error": error, "completed_at": utcnow()}
    values["lease_expires_at"] = None
    if source_path is not None:
        values["source_path"] = source_path
    await session.execute(
        update(Build).where(Build.id == build_id).values(**values).execution_options(synchronize_session=False)
    )


async def release(session: AsyncSession, build_id: str, logs: str) -> None:
    """Put a build this process stops working on back in the queue (graceful shutdown)."""
    await session.execute(BUILDS.release([build_id], _HELD, status=STARTING, logs=logs + RELEASED + "\n"))


async def requeue_expired(session: AsyncSession) -> list[str]:
    """Builds whose runner vanished: queue them again, or fail them after too many interruptions."""
    expired = (await session.execute(select(Build).where(BUILDS.expired(_HELD)).with_for_update())).scalars()
    touched = []
    for build in expired:
        touched.append(build.id)
        if build.logs.count(INTERRUPTED) >= MAX_INTERRUPTIONS:
            build.status = FAILED
            build.error = "The build was interrupted too many times (its server stopped while building); push again"
            build.completed_at = utcnow()
        else:
            build.status = STARTING
            build.logs = build.logs + INTERRUPTED + "\n"
        build.lease_expires_at = None
    await session.flush()
    return touched


async def built_version(session: AsyncSession, source_path: str) -> Version | None:
    """A version built from the same files (its published source), on any model, to reuse its build."""
    result = await session.execute(
        select(Version)
        .where(Version.source_path == source_path, Version.deleting.is_(False))
        .order_by(Version.created_at)
        .limit(1)
    )
    return result.scalar_one_or_none()
