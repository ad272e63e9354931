"""Models: create, find (respecting visibility), list, search, update, delete."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.db.keyset import Cursor, KeysetPage, paginate
from cogport.db.tables import Account, Model, Version, utcnow
from cogport.errors import BadRequest, Conflict, Forbidden, ModelNotFound, Unprocessable
from cogport.ops import accounts
from cogport.ops.principals import Principal

MAX_MODELS_PER_ACCOUNT = 1000
SortBy = Literal["latest_version_created_at", "model_created_at"]


def visible_to(principal: Principal | None) -> ColumnElement[bool]:
    """Public models, plus private ones the caller (or one of its orgs) owns."""
    if principal is None:
        return Model.visibility == "public"
    return or_(Model.visibility == "public", Model.owner_id.in_(principal.acting_ids))


async def find(session: AsyncSession, principal: Principal | None, owner: str, name: str) -> tuple[Model, Account]:
    """The model, or :class:`ModelNotFound` when it is missing *or* invisible (never 403)."""
    result = await session.execute(
        select(Model, Account)
        .join(Account, Account.id == Model.owner_id)
        .where(Account.username == owner, Model.name == name, visible_to(principal))
    )
    row = result.one_or_none()
    if row is None:
        raise ModelNotFound()
    return row[0], row[1]


async def find_managed(session: AsyncSession, principal: Principal, owner: str, name: str) -> tuple[Model, Account]:
    """A model the caller may change: visible *and* owned by the caller or one of its orgs."""
    model, owner_account = await find(session, principal, owner, name)
    if not principal.can_act_for(model.owner_id):
        # The model is public (``find`` hides private ones), so saying why reveals nothing.
        raise Forbidden(f"Only {owner_account.username} (or its members) can change {owner}/{name}")
    return model, owner_account


async def create(
    session: AsyncSession,
    principal: Principal,
    *,
    owner: str,
    name: str,
    visibility: str,
    hardware: str,
    known_hardware: set[str],
    **fields: Any,
) -> tuple[Model, Account]:
    owner_account = await accounts.get_by_username(session, owner)
    if owner_account is None or not principal.can_act_for(owner_account.id):
        raise Unprocessable(f"The owner {owner!r} is not you or an organization you belong to", title="Invalid owner")
    if hardware not in known_hardware:
        raise Unprocessable(
            f"Hardware {hardware!r} is not available; choose one of: {', '.join(sorted(known_hardware))}",
            title="Invalid hardware",
        )
    exists = f"A model named {owner}/{name} already exists"
    existing = await session.execute(select(Model.id).where(Model.owner_id == owner_account.id, Model.name == name))
    if existing.first() is not None:
        raise Conflict(exists)
    count = await session.scalar(select(func.count()).select_from(Model).where(Model.owner_id == owner_account.id))
    if (count or 0) >= MAX_MODELS_PER_ACCOUNT:
        raise BadRequest(f"An account can have at most {MAX_MODELS_PER_ACCOUNT} models")
    model = Model(
        owner_id=owner_account.id,
        name=name,
        visibility=visibility,
        hardware=hardware,
        created_at=utcnow(),
        run_count=0,
        **fields,
    )
    session.add(model)
    await accounts.flush_unique(session, exists)
    return model, owner_account


async def update(session: AsyncSession, model: Model, changes: dict[str, Any]) -> Model:
    for key, value in changes.items():
        setattr(model, key, value)
    await session.flush()
    return model


async def delete(session: AsyncSession, model: Model) -> None:
    if model.visibility != "private":
        raise Conflict("Only private models can be deleted; make the model private first")
    versions = await session.scalar(select(func.count()).select_from(Version).where(Version.model_id == model.id))
    if versions:
        raise Conflict("Delete every version of the model before deleting the model")
    await session.delete(model)
    await session.flush()


def _listing(principal: Principal | None) -> Select[Any]:
    return select(Model).where(visible_to(principal))


async def list_page(
    session: AsyncSession,
    principal: Principal | None,
    *,
    public_only: bool,
    sort_by: SortBy,
    descending: bool,
    cursor: Cursor | None,
    limit: int = 25,
) -> KeysetPage[Model]:
    query = select(Model).where(Model.visibility == "public") if public_only else _listing(principal)
    if sort_by == "model_created_at":
        sort: Any = Model.created_at
        key_of = _created_key
    else:
        sort = func.coalesce(Model.latest_version_created_at, Model.created_at)
        key_of = _latest_key
    return await paginate(
        session, query, sort=sort, tiebreak=Model.id, descending=descending, cursor=cursor, limit=limit, key_of=key_of
    )


def _created_key(model: Model) -> tuple[Any, Any]:
    return model.created_at, model.id


def _latest_key(model: Model) -> tuple[Any, Any]:
    return model.latest_version_created_at or model.created_at, model.id


def _search_filter(text: str) -> ColumnElement[bool]:
    """Case-insensitive substring match on ``owner/name`` and the description (``%`` and ``_`` are literal)."""
    needle = text.lower()
    return or_(
        func.lower(Account.username + "/" + Model.name).contains(needle, autoescape=True),
        func.lower(func.coalesce(Model.description, "")).contains(needle, autoescape=True),
    )


async def search_page(
    session: AsyncSession, principal: Principal | None, text: str, *, cursor: Cursor | None, limit: int = 25
) -> KeysetPage[Model]:
    query = select(Model).join(Account, Account.id == Model.owner_id).where(visible_to(principal), _search_filter(text))
    return await paginate(
        session,
        query,
        sort=Model.created_at,
        tiebreak=Model.id,
        descending=True,
        cursor=cursor,
        limit=limit,
        key_of=_created_key,
    )


async def search(session: AsyncSession, principal: Principal | None, text: str, limit: int) -> list[Model]:
    query = (
        select(Model)
        .join(Account, Account.id == Model.owner_id)
        .where(visible_to(principal), _search_filter(text))
        .order_by(Model.run_count.desc(), Model.created_at.desc())
        .limit(limit)
    )
    return list((await session.execute(query)).scalars())


async def owners(session: AsyncSession, models: list[Model]) -> dict[int, Account]:
    ids = {m.owner_id for m in models}
    if not ids:
        return {}
    result = await session.execute(select(Account).where(Account.id.in_(ids)))
    return {a.id: a for a in result.scalars()}


async def latest_versions(session: AsyncSession, models: list[Model]) -> dict[int, Version]:
    pks = [m.latest_version_pk for m in models if m.latest_version_pk is not None]
    if not pks:
        return {}
    result = await session.execute(select(Version).where(Version.pk.in_(pks)))
    return {v.pk: v for v in result.scalars()}


async def refresh_latest_version(session: AsyncSession, model: Model) -> None:
    """Point ``latest_version_*`` at the newest version that is not being deleted."""
    result = await session.execute(
        select(Version)
        .where(Version.model_id == model.id, Version.deleting.is_(False))
        .order_by(Version.created_at.desc(), Version.pk.desc())
        .limit(1)
    )
    latest = result.scalar_one_or_none()
    model.latest_version_pk = latest.pk if latest else None
    model.latest_version_created_at = latest.created_at if latest else None
    await session.flush()
