"""Browser sessions of the playground: opened with an API token, ended by signing out, by their expiry
or by revoking the token. The cookie holds a random secret; only its SHA-256 is stored."""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.db.tables import Account, ApiToken, WebSession, utcnow
from cogport.errors import Unauthenticated
from cogport.identifiers import hash_token
from cogport.ops import accounts
from cogport.ops.principals import Principal


async def open_session(session: AsyncSession, token: str, *, lifetime: timedelta) -> str:
    """A new session for the holder of ``token``; returns the cookie's secret."""
    result = await session.execute(
        select(ApiToken.id).where(ApiToken.token_hash == hash_token(token.strip()), ApiToken.revoked_at.is_(None))
    )
    token_id = result.scalar_one_or_none()
    if token_id is None:
        raise Unauthenticated("That API token is not valid")
    now = utcnow()
    await session.execute(delete(WebSession).where(WebSession.expires_at < now))
    secret = secrets.token_urlsafe(32)
    row = WebSession(secret_hash=hash_token(secret), token_id=token_id, created_at=now, expires_at=now + lifetime)
    session.add(row)
    await session.flush()
    return secret


async def principal_for(session: AsyncSession, secret: str) -> Principal:
    """The caller behind a session cookie: its token must still be valid and the session unexpired."""
    result = await session.execute(
        select(Account)
        .join(ApiToken, ApiToken.account_id == Account.id)
        .join(WebSession, WebSession.token_id == ApiToken.id)
        .where(
            WebSession.secret_hash == hash_token(secret),
            WebSession.expires_at > utcnow(),
            ApiToken.revoked_at.is_(None),
        )
    )
    account = result.scalar_one_or_none()
    if account is None:
        raise Unauthenticated("Your session has ended: sign in again")
    return await accounts.principal_of(session, account)


async def close_session(session: AsyncSession, secret: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.secret_hash == hash_token(secret)))
