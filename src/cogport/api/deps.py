"""Named dependencies: the session, the caller, the settings, absolute URLs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from cogport.api.access import ACCOUNT_SCOPE_KEY
from cogport.api.principal_cache import PrincipalCache
from cogport.api.rate_limits import RateLimiter
from cogport.db.engine import Database
from cogport.errors import BadRequest, Forbidden, NotFound, Unauthenticated
from cogport.ops import accounts
from cogport.ops.principals import Principal
from cogport.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed before the response is sent."""
    async with get_database(request).session() as session:
        yield session


async def reject_nul(request: Request) -> None:
    """NUL characters cannot be stored or compared in PostgreSQL text: no resource has one in its name."""
    if any("\x00" in value for value in request.path_params.values() if isinstance(value, str)):
        raise NotFound()
    if any("\x00" in key or "\x00" in value for key, value in request.query_params.multi_items()):
        raise BadRequest("Query parameters must not contain NUL characters")


NoNul = Depends(reject_nul)
"""A router dependency: ``APIRouter(dependencies=[NoNul])``."""


async def _settings(request: Request) -> Settings:
    return get_settings(request)


async def _database(request: Request) -> Database:
    return get_database(request)


# Dependencies are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool (slow).
SettingsDep = Annotated[Settings, Depends(_settings)]
DatabaseDep = Annotated[Database, Depends(_database)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() not in ("bearer", "token") or not token.strip():
        raise Unauthenticated("You did not pass a valid authentication token")
    return token.strip()


async def _authenticate(request: Request, token: str) -> Principal:
    """The caller behind ``token``, from the cache or a short transaction of its own (not the
    request's: a request that waits, e.g. ``Prefer: wait``, must not hold a connection), counted against
    its account's rate limit."""
    cache: PrincipalCache = request.app.state.principals
    principal = cache.get(token)
    if principal is None:
        async with get_database(request).session() as session:
            principal = await accounts.authenticate(session, token)
        cache.put(token, principal)
    request.scope[ACCOUNT_SCOPE_KEY] = principal.account.username  # for the request log
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        await limiter.check(request, principal)
    return principal


async def get_principal(request: Request) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated("You did not pass an authentication token")
    return await _authenticate(request, token)


async def get_optional_principal(request: Request) -> Principal | None:
    token = bearer_token(request)
    return None if token is None else await _authenticate(request, token)


async def get_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("This operation needs an admin token")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
OptionalPrincipal = Annotated[Principal | None, Depends(get_optional_principal)]
AdminPrincipal = Annotated[Principal, Depends(get_admin)]


async def get_base_url(request: Request) -> str:
    """The absolute base URL (scheme://host[:port]) that clients reach this server at."""
    settings = get_settings(request)
    if settings.public_url:
        return settings.public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


BaseUrl = Annotated[str, Depends(get_base_url)]
