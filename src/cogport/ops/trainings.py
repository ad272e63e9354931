"""Trainings as rows: the destination check, and the queries the trained-version lifecycle needs.

A training is a row of the ``predictions`` table with ``kind`` :attr:`~cogport.core.kinds.RunKind.TRAINING` (see
:mod:`cogport.ops.predictions` for create/get/list); ``destination_model_id`` names the model the
trained version goes to and ``output_version_pk`` the version it made.
"""

from __future__ import annotations

from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.db.tables import Account, Model, Version
from cogport.errors import DestinationNotFound, NotFound, Unprocessable
from cogport.ops import models as model_ops
from cogport.ops.principals import Principal


async def find_destination(session: AsyncSession, principal: Principal, ref: str) -> tuple[Model, Account]:
    """The model ``owner/name`` a training may publish to: it exists and the caller or one of its
    organizations owns it. Anything else (malformed, missing, invisible, someone else's) is the one
    404 Replicate answers, so nothing is revealed about models the caller cannot use."""
    owner, slash, name = ref.strip().partition("/")
    if not slash or not owner or not name or "/" in name:
        raise DestinationNotFound()
    try:
        model, owner_account = await model_ops.find(session, principal, owner, name)
    except NotFound as exc:
        raise DestinationNotFound() from exc
    if not principal.can_act_for(model.owner_id):
        raise DestinationNotFound()
    return model, owner_account


def require_trainable(model_ref: str, version: Version) -> None:
    """Refuse a base version that has no ``train()`` (422, before anything is queued)."""
    components = (version.openapi_schema or {}).get("components", {}).get("schemas", {})
    if not version.train_ref or "TrainingInput" not in components:
        raise Unprocessable(
            f"Version {version.id} of {model_ref} cannot be trained: its cog.yaml has no `train` entry"
            + (" (it is itself the result of a training)" if version.base_version_pk is not None else ""),
            title="Version not trainable",
        )


async def weights_in_use(session: AsyncSession, prefix: str) -> bool:
    """Whether a version still runs with weights stored under ``prefix`` (a key or a folder): the same
    trained content can be published to several models, and their versions share the bytes."""
    clause = Version.weights_key == prefix
    if prefix.endswith("/"):
        clause = Version.weights_key.startswith(prefix, autoescape=True)
    return bool(await session.scalar(select(exists().where(clause))))
