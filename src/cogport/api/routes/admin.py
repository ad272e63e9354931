"""cogport extensions for admins, under their own prefix ``/admin/v1``: accounts, tokens, collections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from cogport.api import presenters
from cogport.api.deps import AdminPrincipal, BaseUrl, ResourcesDep, SessionDep, principal_cache
from cogport.db.tables import Account, ApiToken
from cogport.ops import accounts as account_ops
from cogport.ops import collections as collection_ops
from cogport.schemas.actions import (
    AccountCreate,
    CollectionCreate,
    CollectionUpdate,
    MembersUpdate,
    TokenCreate,
    TokenRevoke,
)
from cogport.schemas.responses import AdminAccount, Collection, Token, TokenInfo


async def _forget_principals(request: Request) -> AsyncIterator[None]:
    """Account, member and token changes take effect at once in this process (see PrincipalCache)."""
    yield
    if request.method != "GET":
        principal_cache(request).clear()


router = APIRouter(prefix="/admin/v1", tags=["admin"], dependencies=[Depends(_forget_principals, scope="function")])


async def _present(session: SessionDep, account: Account) -> AdminAccount:
    members = await account_ops.member_names(session, account.id) if account.type == "organization" else None
    base = presenters.account(account)
    return AdminAccount(
        **base.model_dump(),
        is_admin=account.is_admin,
        members=members,
        created_at=presenters.timestamp(account.created_at) or "",
    )


@router.get("/accounts")
async def list_accounts(session: SessionDep, _admin: AdminPrincipal) -> list[AdminAccount]:
    return [await _present(session, a) for a in await account_ops.list_accounts(session)]


@router.post("/accounts", status_code=201)
async def create_account(body: AccountCreate, session: SessionDep, _admin: AdminPrincipal) -> AdminAccount:
    account = await account_ops.create_account(
        session,
        body.username,
        name=body.name,
        type=body.type,
        is_admin=body.is_admin,
        github_url=body.github_url,
        members=body.members,
    )
    return await _present(session, account)


@router.get("/accounts/{username}")
async def get_account(username: str, session: SessionDep, _admin: AdminPrincipal) -> AdminAccount:
    return await _present(session, await account_ops.require(session, username))


@router.patch("/accounts/{username}/members")
async def update_members(
    username: str, body: MembersUpdate, session: SessionDep, _admin: AdminPrincipal
) -> AdminAccount:
    org = await account_ops.require(session, username)
    await account_ops.add_members(session, org, body.add)
    await account_ops.remove_members(session, org, body.remove)
    return await _present(session, org)


@router.post("/accounts/{username}/tokens", status_code=201)
async def create_token(username: str, body: TokenCreate, session: SessionDep, _admin: AdminPrincipal) -> Token:
    account = await account_ops.require(session, username)
    row, plain = await account_ops.create_token(session, account, label=body.label)
    return Token(
        account=account.username, token=plain, hint=row.hint, created_at=presenters.timestamp(row.created_at) or ""
    )


def _token_info(row: ApiToken, username: str) -> TokenInfo:
    return TokenInfo(
        id=row.id,
        account=username,
        hint=row.hint,
        label=row.label,
        created_at=presenters.timestamp(row.created_at) or "",
        revoked_at=presenters.timestamp(row.revoked_at),
    )


@router.get("/accounts/{username}/tokens")
async def list_tokens(username: str, session: SessionDep, _admin: AdminPrincipal) -> list[TokenInfo]:
    """The account's tokens, oldest first, revoked ones included (never the tokens themselves)."""
    account = await account_ops.require(session, username)
    return [_token_info(row, account.username) for row in await account_ops.list_tokens(session, account)]


async def _revoke(session: SessionDep, row: ApiToken) -> TokenInfo:
    await account_ops.revoke_token(session, row)
    owner = await session.get(Account, row.account_id)
    return _token_info(row, owner.username if owner else "")


@router.post("/tokens/revoke")
async def revoke_token(body: TokenRevoke, session: SessionDep, _admin: AdminPrincipal) -> TokenInfo:
    """Revoke a token by the token itself (in the body, so it never lands in an access log)."""
    return await _revoke(session, await account_ops.find_token(session, token=body.token))


@router.delete("/tokens/{token_id}")
async def revoke_token_by_id(token_id: int, session: SessionDep, _admin: AdminPrincipal) -> TokenInfo:
    """Revoke a token by the id that ``GET /admin/v1/accounts/{username}/tokens`` shows."""
    return await _revoke(session, await account_ops.find_token(session, token_id=token_id))


async def _collection(session: SessionDep, slug: str, base_url: str) -> Collection:
    collection = await collection_ops.get(session, slug)
    models = await collection_ops.models_of(session, None, collection)
    return presenters.collection(collection, await presenters.models(session, models, base_url))


@router.post("/collections", status_code=201)
async def create_collection(
    body: CollectionCreate, session: SessionDep, _admin: AdminPrincipal, base_url: BaseUrl
) -> Collection:
    await collection_ops.create(session, **body.model_dump())
    return await _collection(session, body.slug, base_url)


@router.patch("/collections/{slug}")
async def update_collection(
    slug: str, body: CollectionUpdate, session: SessionDep, _admin: AdminPrincipal, base_url: BaseUrl
) -> Collection:
    collection = await collection_ops.get(session, slug)
    await collection_ops.update(session, collection, body.model_dump(exclude_unset=True))
    return await _collection(session, slug, base_url)


@router.delete("/collections/{slug}", status_code=204)
async def delete_collection(slug: str, session: SessionDep, _admin: AdminPrincipal) -> Response:
    await collection_ops.delete_collection(session, await collection_ops.get(session, slug))
    return Response(status_code=204)


@router.get("/instances")
async def list_instances(_admin: AdminPrincipal, resources: ResourcesDep) -> dict[str, Any]:
    """Every instance this process runs (deployments' and on-demand ones), with the pool it belongs to."""
    views = resources.backend.instances()
    return {"results": [{**presenters.instance(view), "pool": view.pool or "on-demand"} for view in views]}
