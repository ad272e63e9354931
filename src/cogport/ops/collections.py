"""Collections: curated lists of models."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.db.keyset import Cursor, KeysetPage, paginate
from cogport.db.tables import Account, Collection, CollectionModel, Model, utcnow
from cogport.errors import Conflict, NotFound, Unprocessable
from cogport.ops import accounts
from cogport.ops import models as model_ops
from cogport.ops.principals import Principal


def _key(collection: Collection) -> tuple[Any, Any]:
    return collection.created_at, collection.id


async def list_page(session: AsyncSession, *, cursor: Cursor | None, limit: int = 25) -> KeysetPage[Collection]:
    return await paginate(
        session,
        select(Collection),
        sort=Collection.created_at,
        tiebreak=Collection.id,
        descending=True,
        cursor=cursor,
        limit=limit,
        key_of=_key,
    )


async def get(session: AsyncSession, slug: str) -> Collection:
    result = await session.execute(select(Collection).where(Collection.slug == slug))
    collection = result.scalar_one_or_none()
    if collection is None:
        raise NotFound()
    return collection


async def models_of(session: AsyncSession, principal: Principal | None, collection: Collection) -> list[Model]:
    """The collection's models that the caller can see, in order."""
    result = await session.execute(
        select(Model)
        .join(CollectionModel, CollectionModel.model_id == Model.id)
        .where(CollectionModel.collection_id == collection.id, model_ops.visible_to(principal))
        .order_by(CollectionModel.position)
    )
    return list(result.scalars())


async def create(
    session: AsyncSession, *, slug: str, name: str, description: str, full_description: str | None, models: list[str]
) -> Collection:
    exists = f"A collection with slug {slug!r} already exists"
    if (await session.execute(select(Collection.id).where(Collection.slug == slug))).first() is not None:
        raise Conflict(exists)
    collection = Collection(
        slug=slug, name=name, description=description, full_description=full_description, created_at=utcnow()
    )
    session.add(collection)
    await accounts.flush_unique(session, exists)
    await set_models(session, collection, models)
    return collection


async def update(session: AsyncSession, collection: Collection, changes: dict[str, Any]) -> Collection:
    refs = changes.pop("models", None)
    for key, value in changes.items():
        setattr(collection, key, value)
    if refs is not None:
        await set_models(session, collection, refs)
    await session.flush()
    return collection


async def set_models(session: AsyncSession, collection: Collection, refs: list[str]) -> None:
    await session.execute(delete(CollectionModel).where(CollectionModel.collection_id == collection.id))
    seen: set[int] = set()
    for position, ref in enumerate(refs):
        owner, name = ref.split("/", 1)
        result = await session.execute(
            select(Model.id)
            .join(Account, Account.id == Model.owner_id)
            .where(Account.username == owner, Model.name == name, Model.visibility == "public")
        )
        model_id = result.scalar_one_or_none()
        if model_id is None:
            raise Unprocessable(f"{ref} is not a public model", title="Invalid collection")
        if model_id not in seen:
            seen.add(model_id)
            session.add(CollectionModel(collection_id=collection.id, model_id=model_id, position=position))
    await session.flush()


async def delete_collection(session: AsyncSession, collection: Collection) -> None:
    await session.delete(collection)
    await session.flush()


async def search(session: AsyncSession, text: str, limit: int) -> list[Collection]:
    pattern = f"%{text.lower()}%"
    result = await session.execute(
        select(Collection)
        .where(
            (Collection.name.ilike(pattern))
            | (Collection.description.ilike(pattern))
            | (Collection.slug.ilike(pattern))
        )
        .limit(limit)
    )
    return list(result.scalars())


async def model_refs(session: AsyncSession, collection: Collection) -> list[str]:
    result = await session.execute(
        select(Account.username, Model.name)
        .join(Model, Model.owner_id == Account.id)
        .join(CollectionModel, CollectionModel.model_id == Model.id)
        .where(CollectionModel.collection_id == collection.id, Model.visibility == "public")
        .order_by(CollectionModel.position)
    )
    return [f"{owner}/{name}" for owner, name in result.all()]
