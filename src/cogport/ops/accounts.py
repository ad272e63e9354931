"""Accounts (users and organizations), memberships and API tokens."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.db.tables import Account, ApiToken, Membership, utcnow
from cogport.errors import BadRequest, Conflict, NotFound, Unauthenticated
from cogport.identifiers import hash_token, new_api_token, new_webhook_secret
from cogport.ops.principals import Principal


async def flush_unique(session: AsyncSession, conflict: str) -> None:
    """Flush new rows; a unique constraint broken by a concurrent request becomes :class:`Conflict`.

    Creators check for an existing row first (for a clear message), but two requests can both pass
    that check; the database's unique constraint decides, and the loser gets the same 409.
    """
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(conflict) from exc


async def get_by_username(session: AsyncSession, username: str) -> Account | None:
    result = await session.execute(select(Account).where(Account.username == username))
    return result.scalar_one_or_none()


async def require(session: AsyncSession, username: str) -> Account:
    account = await get_by_username(session, username)
    if account is None:
        raise NotFound(f"Account {username!r} does not exist")
    return account


async def create_account(
    session: AsyncSession,
    username: str,
    *,
    name: str | None = None,
    type: str = "user",
    is_admin: bool = False,
    github_url: str | None = None,
    members: Iterable[str] = (),
) -> Account:
    if await get_by_username(session, username) is not None:
        raise Conflict(f"Account {username!r} already exists")
    if type == "organization" and is_admin:
        raise BadRequest("An organization cannot be an admin")
    account = Account(
        username=username,
        name=name or username,
        type=type,
        is_admin=is_admin,
        github_url=github_url,
        webhook_secret=new_webhook_secret(),
        created_at=utcnow(),
    )
    session.add(account)
    await flush_unique(session, f"Account {username!r} already exists")
    if members:
        if type != "organization":
            raise BadRequest("Only organizations have members")
        await add_members(session, account, members)
    return account


async def add_members(session: AsyncSession, org: Account, usernames: Iterable[str]) -> None:
    if org.type != "organization":
        raise BadRequest(f"{org.username!r} is not an organization")
    current = set(await member_ids(session, org.id))
    for username in usernames:
        user = await require(session, username)
        if user.type != "user":
            raise BadRequest(f"{username!r} is an organization; only users can be members")
        if user.id not in current:
            session.add(Membership(organization_id=org.id, user_id=user.id))
            current.add(user.id)
    await flush_unique(session, f"The members of {org.username!r} were changed at the same time; try again")


async def remove_members(session: AsyncSession, org: Account, usernames: Iterable[str]) -> None:
    for username in usernames:
        user = await require(session, username)
        await session.execute(
            delete(Membership).where(Membership.organization_id == org.id, Membership.user_id == user.id)
        )


async def member_ids(session: AsyncSession, org_id: int) -> list[int]:
    result = await session.execute(select(Membership.user_id).where(Membership.organization_id == org_id))
    return list(result.scalars())


async def member_names(session: AsyncSession, org_id: int) -> list[str]:
    result = await session.execute(
        select(Account.username)
        .join(Membership, Membership.user_id == Account.id)
        .where(Membership.organization_id == org_id)
        .order_by(Account.username)
    )
    return list(result.scalars())


async def list_accounts(session: AsyncSession) -> list[Account]:
    result = await session.execute(select(Account).order_by(Account.id))
    return list(result.scalars())


async def create_token(
    session: AsyncSession, account: Account, *, token: str | None = None, label: str | None = None
) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the plain token (never stored)."""
    if account.type != "user":
        raise BadRequest("Tokens belong to users; organizations act through their members")
    plain = token or new_api_token()
    row = ApiToken(
        account_id=account.id,
        token_hash=hash_token(plain),
        hint=plain[:3] + "…" + plain[-4:],
        label=label,
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    return row, plain


async def list_tokens(session: AsyncSession, account: Account) -> list[ApiToken]:
    result = await session.execute(select(ApiToken).where(ApiToken.account_id == account.id).order_by(ApiToken.id))
    return list(result.scalars())


async def find_token(session: AsyncSession, *, token: str | None = None, token_id: int | None = None) -> ApiToken:
    """A token row by the plain token (hashed to find it) or by its id; :class:`NotFound` otherwise."""
    if token is not None:
        condition = ApiToken.token_hash == hash_token(token)
    elif token_id is not None:
        if not 0 < token_id < 1 << 31:  # an INTEGER key holds no such id, and a driver may refuse to bind it
            raise NotFound("No such token")
        condition = ApiToken.id == token_id
    else:
        raise BadRequest("Name the token, or its id")
    row = (await session.execute(select(ApiToken).where(condition))).scalar_one_or_none()
    if row is None:
        raise NotFound("No such token")
    return row


async def revoke_token(session: AsyncSession, row: ApiToken) -> ApiToken:
    """Revoke a token (idempotent: a revoked token keeps its first ``revoked_at``).

    :class:`Conflict` for the last valid token of any admin: revoking it would lock every admin out."""
    if row.revoked_at is None:
        if await _valid_admin_token_ids(session) == {row.id}:
            raise Conflict(
                "This is the last valid admin token: revoking it would leave no admin able to sign in. "
                "Create another admin token first, then revoke this one."
            )
        row.revoked_at = utcnow()
        await session.flush()
    return row


async def _valid_admin_token_ids(session: AsyncSession) -> set[int]:
    """The unrevoked tokens of admin accounts, locked (on PostgreSQL) so that two revocations of the last two
    cannot both see the other one still valid."""
    result = await session.execute(
        select(ApiToken.id)
        .join(Account, Account.id == ApiToken.account_id)
        .where(Account.is_admin.is_(True), ApiToken.revoked_at.is_(None))
        .with_for_update(of=ApiToken)
    )
    return set(result.scalars())


async def restore_token(session: AsyncSession, row: ApiToken) -> None:
    """Make a revoked token valid again (the operator's ``COGPORT_ADMIN_TOKEN`` at start; see bootstrap)."""
    row.revoked_at = None
    await session.flush()


async def authenticate(session: AsyncSession, token: str) -> Principal:
    result = await session.execute(
        select(Account)
        .join(ApiToken, ApiToken.account_id == Account.id)
        .where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    )
    account = result.scalar_one_or_none()
    if account is None:
        raise Unauthenticated("You did not pass a valid authentication token")
    return await principal_of(session, account)


async def principal_of(session: AsyncSession, account: Account) -> Principal:
    """``account`` as a caller: itself plus the organizations it belongs to."""
    orgs = await session.execute(select(Membership.organization_id).where(Membership.user_id == account.id))
    return Principal(account=account, acting_ids=frozenset({account.id, *orgs.scalars()}))


async def any_admin(session: AsyncSession) -> Account | None:
    result = await session.execute(select(Account).where(Account.is_admin.is_(True)).limit(1))
    return result.scalar_one_or_none()
