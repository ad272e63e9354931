"""Versions: list, get, create (by builds and trainings) and delete with Replicate's rules."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.db.keyset import Cursor, KeysetPage, paginate
from cogport.db.tables import Account, Deployment, Model, Prediction, StoredFile, Version, utcnow
from cogport.errors import Conflict, Forbidden, InvalidVersion, VersionNotFound
from cogport.ops import accounts, models
from cogport.ops.principals import Principal


class AmbiguousVersion(InvalidVersion):
    def __init__(self) -> None:
        super().__init__(
            "This version id names versions of several models (they were pushed or trained before version ids "
            "included the model); pass it as owner/name:id"
        )


class _Undeletable(Conflict):
    title = "Version cannot be deleted"


def _key(version: Version) -> tuple[Any, Any]:
    return version.created_at, version.pk


async def list_page(
    session: AsyncSession, model: Model, *, cursor: Cursor | None, limit: int = 25
) -> KeysetPage[Version]:
    query = select(Version).where(Version.model_id == model.id, Version.deleting.is_(False))
    return await paginate(
        session,
        query,
        sort=Version.created_at,
        tiebreak=Version.pk,
        descending=True,
        cursor=cursor,
        limit=limit,
        key_of=_key,
    )


async def get(session: AsyncSession, model: Model, version_id: str) -> Version:
    result = await session.execute(
        select(Version).where(
            Version.model_id == model.id, Version.id == version_id.lower(), Version.deleting.is_(False)
        )
    )
    version = result.scalar_one_or_none()
    if version is None:
        raise VersionNotFound()
    return version


async def find_visible(
    session: AsyncSession, principal: Principal | None, version_id: str
) -> tuple[Version, Model, Account] | None:
    """A version by bare id among the models the caller can see.

    Version ids include the model, so an id names one version. Versions pushed before that can share an
    id across models: such an id is :class:`AmbiguousVersion` rather than a guess at which model was meant.
    """
    result = await session.execute(
        select(Version, Model, Account)
        .join(Model, Model.id == Version.model_id)
        .join(Account, Account.id == Model.owner_id)
        .where(Version.id == version_id.lower(), Version.deleting.is_(False), models.visible_to(principal))
        .limit(2)
    )
    rows = result.all()
    if len(rows) > 1:
        raise AmbiguousVersion()
    return (rows[0][0], rows[0][1], rows[0][2]) if rows else None


async def create(session: AsyncSession, model: Model, version_id: str, **fields: Any) -> tuple[Version, bool]:
    """Add a version to ``model``; returns ``(version, created)``. Pushing the same id is idempotent."""
    existing = await session.execute(select(Version).where(Version.model_id == model.id, Version.id == version_id))
    version = existing.scalar_one_or_none()
    if version is not None and not version.deleting:
        return version, False
    if version is not None:
        raise Conflict("This version is being deleted; push again once the deletion has finished")
    version = Version(id=version_id, model_id=model.id, created_at=utcnow(), **fields)
    session.add(version)
    await accounts.flush_unique(session, "This version is being pushed by another request at the same time")
    await models.refresh_latest_version(session, model)
    return version, True


async def request_delete(session: AsyncSession, principal: Principal, model: Model, version: Version) -> None:
    """Check Replicate's rules and mark the version for background removal.

    The caller has already found ``model`` through :func:`cogport.ops.models.find`, so a private
    model of someone else never gets here (it is a 404); a public one is refused as not theirs.
    """
    if not principal.can_act_for(model.owner_id):
        raise Forbidden("Only the owner of a model (or a member of the owning organization) can delete its versions")
    if model.visibility != "private":
        raise _Undeletable("Versions of public models cannot be deleted; make the model private first")
    allowed = {model.owner_id, *(await accounts.member_ids(session, model.owner_id))}
    if await session.scalar(
        select(exists().where(Prediction.version_pk == version.pk, Prediction.account_id.not_in(allowed)))
    ):
        raise _Undeletable("Someone other than the owner has run predictions with this version")
    if await session.scalar(select(exists().where(Version.base_version_pk == version.pk))):
        raise _Undeletable("This version is the base of a training; delete the trained versions first")
    if await session.scalar(select(exists().where(Deployment.version_pk == version.pk))):
        raise _Undeletable("A deployment runs this version; point it at another version or delete it first")
    version.deleting = True
    await session.flush()
    await models.refresh_latest_version(session, model)


async def pending_deletions(session: AsyncSession, limit: int = 10) -> list[Version]:
    """Versions marked for deletion, locked for this transaction; other processes' Janitors skip them."""
    result = await session.execute(
        select(Version).where(Version.deleting.is_(True)).limit(limit).with_for_update(skip_locked=True)
    )
    return list(result.scalars())


_FINISHED = ("succeeded", "failed", "canceled", "aborted")


async def unfinished_of_deleted(session: AsyncSession, limit: int = 100) -> list[str]:
    """Predictions (queued or running) of versions marked for deletion: they must end before the purge."""
    result = await session.execute(
        select(Prediction.id)
        .join(Version, Version.pk == Prediction.version_pk)
        .where(Version.deleting.is_(True), Prediction.status.not_in(_FINISHED))
        .limit(limit)
    )
    return list(result.scalars())


async def has_unfinished(session: AsyncSession, version: Version) -> bool:
    return bool(
        await session.scalar(
            select(exists().where(Prediction.version_pk == version.pk, Prediction.status.not_in(_FINISHED)))
        )
    )


async def prediction_ids(session: AsyncSession, version: Version) -> list[str]:
    result = await session.execute(select(Prediction.id).where(Prediction.version_pk == version.pk))
    return list(result.scalars())


async def purge(session: AsyncSession, version: Version) -> None:
    """Remove the version row, its predictions and their file rows (storage is cleaned by the caller)."""
    prediction_ids = select(Prediction.id).where(Prediction.version_pk == version.pk)
    await session.execute(delete(StoredFile).where(StoredFile.prediction_id.in_(prediction_ids)))
    await session.execute(delete(Prediction).where(Prediction.version_pk == version.pk))
    await session.delete(version)
    await session.flush()


async def source_in_use(session: AsyncSession, source_path: str) -> bool:
    """Whether another version (same content on another model, or a trained one) still uses the files."""
    return bool(await session.scalar(select(exists().where(Version.source_path == source_path))))
