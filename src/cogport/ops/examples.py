"""The ``examples`` organization and its public example models (``settings.register_examples``)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.db.tables import Account, Build, Model, utcnow
from cogport.ops import accounts, builds

EXAMPLES_ACCOUNT = "examples"


async def ensure_account(session: AsyncSession) -> Account:
    account = await accounts.get_by_username(session, EXAMPLES_ACCOUNT)
    if account is None:
        account = await accounts.create_account(session, EXAMPLES_ACCOUNT, name="Cog examples", type="organization")
    return account


async def ensure_model(session: AsyncSession, owner: Account, name: str, description: str | None) -> Model:
    model = (
        await session.execute(select(Model).where(Model.owner_id == owner.id, Model.name == name))
    ).scalar_one_or_none()
    if model is None:
        model = Model(
            owner_id=owner.id,
            name=name,
            description=description,
            visibility="public",
            hardware="cpu",
            created_at=utcnow(),
            run_count=0,
        )
        session.add(model)
        await session.flush()
    return model


async def build_pending(session: AsyncSession, model: Model, version_id: str) -> bool:
    """Whether a build of this content for this model is queued or running (e.g. from an earlier start)."""
    found = await session.scalar(
        select(Build.id).where(
            Build.model_id == model.id,
            Build.version_id == version_id,
            Build.status.in_((builds.STARTING, builds.PROCESSING)),
        )
    )
    return found is not None
