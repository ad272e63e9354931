"""Deployments: create, find (owners and their orgs only), list, release, touch, delete.

Every operation takes a session, flushes and never commits. Someone else's deployment does not
exist for the caller (404 for every operation), unlike a public model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.core.status import ACTIVE
from cogport.db.keyset import Cursor, KeysetPage, paginate
from cogport.db.tables import Account, Deployment, Model, Prediction, Version, utcnow
from cogport.errors import Conflict, InvalidVersion, NotFound, Unprocessable
from cogport.ops import accounts
from cogport.ops import models as model_ops
from cogport.ops import versions as version_ops
from cogport.ops.principals import Principal


class DeploymentNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("Deployment not found")


class _Undeletable(Conflict):
    title = "Deployment cannot be deleted"


@dataclass(frozen=True)
class Config:
    """A release's configuration, checked before it is stored."""

    hardware: str
    min_instances: int
    max_instances: int

    def check(self, known_hardware: set[str]) -> None:
        if self.hardware not in known_hardware:
            raise Unprocessable(
                f"Hardware {self.hardware!r} is not available; choose one of: {', '.join(sorted(known_hardware))}",
                title="Invalid hardware",
            )
        if self.min_instances > self.max_instances:
            raise Unprocessable(
                f"min_instances ({self.min_instances}) must not exceed max_instances ({self.max_instances})",
                title="Invalid instances",
            )


@dataclass(frozen=True)
class Detail:
    """A deployment with what its wire object names: owner, model, version and the release's creator."""

    deployment: Deployment
    owner: Account
    model_ref: str
    version_id: str
    created_by: Account


async def find(session: AsyncSession, principal: Principal, owner: str, name: str) -> tuple[Deployment, Account]:
    """The caller's (or one of its orgs') deployment and its owner, else :class:`DeploymentNotFound`."""
    result = await session.execute(
        select(Deployment, Account)
        .join(Account, Account.id == Deployment.owner_id)
        .where(Account.username == owner, Deployment.name == name, Deployment.owner_id.in_(principal.acting_ids))
    )
    row = result.one_or_none()
    if row is None:
        raise DeploymentNotFound()
    return row[0], row[1]


async def _version_of(session: AsyncSession, model: Model, version_id: str) -> Version:
    try:
        return await version_ops.get(session, model, version_id.rpartition(":")[2])
    except NotFound as exc:
        raise InvalidVersion("The version is not a version of the deployment's model") from exc


async def create(
    session: AsyncSession,
    principal: Principal,
    *,
    owner: str | None,
    name: str,
    model_ref: str,
    version_id: str,
    config: Config,
    known_hardware: set[str],
) -> Deployment:
    owner_account = principal.account if owner is None else await accounts.get_by_username(session, owner)
    if owner_account is None or not principal.can_act_for(owner_account.id):
        raise Unprocessable(f"The owner {owner!r} is not you or an organization you belong to", title="Invalid owner")
    model_owner, _, model_name = model_ref.partition("/")
    try:
        model, _ = await model_ops.find(session, principal, model_owner, model_name)
    except NotFound as exc:
        raise Unprocessable(f"There is no model {model_ref!r} you can see", title="Invalid model") from exc
    version = await _version_of(session, model, version_id)
    config.check(known_hardware)
    exists_message = f"A deployment named {owner_account.username}/{name} already exists"
    taken = await session.scalar(
        select(exists().where(Deployment.owner_id == owner_account.id, Deployment.name == name))
    )
    if taken:
        raise Conflict(exists_message)
    now = utcnow()
    deployment = Deployment(
        owner_id=owner_account.id,
        name=name,
        model_id=model.id,
        version_pk=version.pk,
        hardware=config.hardware,
        min_instances=config.min_instances,
        max_instances=config.max_instances,
        release_number=1,
        release_created_at=now,
        release_created_by_id=principal.id,
        created_at=now,
        updated_at=now,
        offline_since=now if config.min_instances == 0 else None,
    )
    session.add(deployment)
    await accounts.flush_unique(session, exists_message)
    return deployment


async def release(
    session: AsyncSession,
    principal: Principal,
    deployment: Deployment,
    changes: dict[str, Any],
    known_hardware: set[str],
) -> Deployment:
    """Apply ``changes`` (any of version, hardware, min/max instances) as a new release."""
    if not changes:
        raise Unprocessable("Give at least one of version, hardware, min_instances and max_instances")
    config = Config(
        hardware=changes.get("hardware", deployment.hardware),
        min_instances=changes.get("min_instances", deployment.min_instances),
        max_instances=changes.get("max_instances", deployment.max_instances),
    )
    config.check(known_hardware)
    if "version" in changes:
        model = await session.get(Model, deployment.model_id)
        if model is None:
            raise DeploymentNotFound()
        deployment.version_pk = (await _version_of(session, model, changes["version"])).pk
    now = utcnow()
    if config.min_instances > 0:
        deployment.offline_since = None
    elif deployment.offline_since is None:
        deployment.offline_since = now
    deployment.hardware = config.hardware
    deployment.min_instances = config.min_instances
    deployment.max_instances = config.max_instances
    deployment.release_number += 1
    deployment.release_created_at = now
    deployment.release_created_by_id = principal.id
    deployment.updated_at = now
    await session.flush()
    return deployment


async def touch(session: AsyncSession, deployment: Deployment | int) -> None:
    """Record that a prediction was created through the deployment (``last_used_at``)."""
    deployment_id = deployment if isinstance(deployment, int) else deployment.id
    await session.execute(update(Deployment).where(Deployment.id == deployment_id).values(last_used_at=utcnow()))
    await session.flush()


def ref(owner: Account, deployment: Deployment) -> str:
    """``owner/name``, as predictions made through the deployment carry it."""
    return f"{owner.username}/{deployment.name}"


async def delete(session: AsyncSession, deployment: Deployment, owner: Account, offline_before: float) -> None:
    """Delete a deployment that has been offline and unused for ``offline_before`` seconds."""
    if deployment.min_instances > 0 or deployment.offline_since is None:
        raise _Undeletable("Set min_instances to 0 and wait until the deployment is offline before deleting it")
    now = utcnow()
    quiet_since: datetime = max(deployment.offline_since, deployment.last_used_at or deployment.offline_since)
    if now - quiet_since < timedelta(seconds=offline_before):
        left = offline_before - (now - quiet_since).total_seconds()
        raise _Undeletable(
            f"A deployment can be deleted once it has been offline and unused for {offline_before:.0f} seconds; "
            f"try again in {left:.0f} seconds"
        )
    running = await session.scalar(
        select(exists().where(Prediction.deployment == ref(owner, deployment), Prediction.status.in_(ACTIVE)))
    )
    if running:
        raise _Undeletable("Predictions made through this deployment are still running")
    await session.delete(deployment)
    await session.flush()


def _key(deployment: Deployment) -> tuple[Any, Any]:
    return deployment.created_at, deployment.id


async def list_page(
    session: AsyncSession, principal: Principal, *, cursor: Cursor | None, limit: int = 25
) -> KeysetPage[Deployment]:
    """The caller's and its orgs' deployments, newest first."""
    query = select(Deployment).where(Deployment.owner_id.in_(principal.acting_ids))
    return await paginate(
        session,
        query,
        sort=Deployment.created_at,
        tiebreak=Deployment.id,
        descending=True,
        cursor=cursor,
        limit=limit,
        key_of=_key,
    )


async def details(session: AsyncSession, rows: list[Deployment]) -> list[Detail]:
    """Load what the wire objects of ``rows`` name, in a few queries for the whole page."""
    if not rows:
        return []
    version_rows = await session.execute(
        select(Version.pk, Version.id).where(Version.pk.in_({d.version_pk for d in rows}))
    )
    versions = {pk: vid for pk, vid in version_rows}
    model_rows = await session.execute(select(Model).where(Model.id.in_({d.model_id for d in rows})))
    models = {m.id: m for m in model_rows.scalars()}
    account_ids = {d.owner_id for d in rows} | {d.release_created_by_id for d in rows if d.release_created_by_id}
    account_ids |= {m.owner_id for m in models.values()}
    account_rows = await session.execute(select(Account).where(Account.id.in_(account_ids)))
    owners = {a.id: a for a in account_rows.scalars()}
    out = []
    for d in rows:
        model = models[d.model_id]
        creator = owners.get(d.release_created_by_id or -1, owners[d.owner_id])
        model_ref = f"{owners[model.owner_id].username}/{model.name}"
        out.append(Detail(d, owners[d.owner_id], model_ref, versions[d.version_pk], creator))
    return out


async def detail(session: AsyncSession, deployment: Deployment) -> Detail:
    return (await details(session, [deployment]))[0]


async def active(session: AsyncSession) -> list[Deployment]:
    """Every deployment (version pk, hardware, min/max instances): what the autoscaler holds to."""
    result = await session.execute(select(Deployment).order_by(Deployment.id))
    return list(result.scalars())


async def by_ref(session: AsyncSession, ref: str) -> Deployment | None:
    """The deployment ``owner/name`` (no access check: for the runtime's placement)."""
    owner, _, name = ref.partition("/")
    result = await session.execute(
        select(Deployment)
        .join(Account, Account.id == Deployment.owner_id)
        .where(Account.username == owner, Deployment.name == name)
    )
    return result.scalar_one_or_none()


async def hardware_of(session: AsyncSession, ref: str) -> str | None:
    found = await by_ref(session, ref)
    return found.hardware if found is not None else None


async def refs(session: AsyncSession, rows: list[Deployment]) -> dict[int, str]:
    """``owner/name`` of each deployment, by id."""
    owner_ids = {row.owner_id for row in rows}
    if not owner_ids:
        return {}
    result = await session.execute(select(Account.id, Account.username).where(Account.id.in_(owner_ids)))
    names = {account_id: username for account_id, username in result}
    return {row.id: f"{names.get(row.owner_id, '?')}/{row.name}" for row in rows}
