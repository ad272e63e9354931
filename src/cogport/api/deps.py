"""Named dependencies: the session, the caller, the settings, the server's resources, absolute URLs.

The one module that knows what ``app.state`` holds (set by :mod:`cogport.app`): routes and pages take
what they need as typed parameters (``ResourcesDep``, ``CallDep``, ``SessionDep``, ...). FastAPI solves each
``Depends`` on every request, so there are few and they are flat: the prediction routes, the hot path,
take one ``CallDep`` (caller, base URL and resources together) rather than three.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Scope

from cogport.api.access import ACCOUNT_SCOPE_KEY
from cogport.api.principal_cache import PrincipalCache
from cogport.api.rate_limits import RateLimiter
from cogport.db.engine import Database
from cogport.errors import Forbidden, Unauthenticated
from cogport.ops import accounts, web_sessions
from cogport.ops.principals import Principal
from cogport.resources import Resources
from cogport.settings import Settings


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_resources(request: Request) -> Resources:
    """The server's resources (opened by the app's lifespan)."""
    resources: Resources = request.app.state.resources
    return resources


def get_database(request: Request) -> Database:
    return get_resources(request).database


def principal_cache(request: Request) -> PrincipalCache:
    """This process's cache of callers (:mod:`cogport.api.principal_cache`)."""
    cache: PrincipalCache = request.app.state.principals
    return cache


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed before the response is sent."""
    async with get_database(request).session() as session:
        yield session


async def _settings(request: Request) -> Settings:
    return get_settings(request)


async def _resources(request: Request) -> Resources:
    return get_resources(request)


# Dependencies are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool (slow).
SettingsDep = Annotated[Settings, Depends(_settings)]
ResourcesDep = Annotated[Resources, Depends(_resources)]
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
    return await _admit(request, await _cached(request, token, lambda s: accounts.authenticate(s, token)))


async def _cached(request: Request, key: str, load: Callable[[AsyncSession], Awaitable[Principal]]) -> Principal:
    """The principal cached under ``key``, else ``load``-ed in a short transaction of its own."""
    cache = principal_cache(request)
    principal = cache.get(key)
    if principal is None:
        async with get_database(request).session() as session:
            principal = await load(session)
        cache.put(key, principal)
    return principal


async def _admit(request: Request, principal: Principal) -> Principal:
    """Count an authenticated request against its account's rate limit; name the account in the log."""
    request.scope[ACCOUNT_SCOPE_KEY] = principal.account.username  # for the request log
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        await limiter.check(request, principal)
    return principal


SESSION_COOKIE = "cogport_session"
"""The playground's session cookie (HttpOnly, SameSite=Strict; :mod:`cogport.web.auth`)."""

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "QUERY"})


def same_origin(request: Request) -> bool:
    """Whether a browser says this request comes from a page of this server (the CSRF check for cookies)."""
    if request.headers.get("sec-fetch-site") == "same-origin":
        return True
    origin = request.headers.get("origin")
    if not origin:
        return False
    own = {f"{request.url.scheme}://{request.headers.get('host', '')}"}
    public_url = get_settings(request).public_url
    if public_url:
        own.add(public_url.rstrip("/"))
    return origin in own


async def authenticate_session(request: Request, secret: str) -> Principal:
    """The caller behind a playground cookie. Besides SameSite=Strict, a request that changes anything
    must come from one of this server's pages."""
    if request.method not in _SAFE_METHODS and not same_origin(request):
        raise Forbidden("A request signed in by cookie must come from this server's own pages")
    principal = await _cached(request, session_cache_key(secret), lambda s: web_sessions.principal_for(s, secret))
    return await _admit(request, principal)


def session_cache_key(secret: str) -> str:
    """A session's entry in the principal cache (the prefix keeps it apart from tokens)."""
    return f"session:{secret}"


async def _admitted_caller(request: Request) -> Principal | None:
    token = bearer_token(request)
    if token is not None:
        return await _authenticate(request, token)
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        return await authenticate_session(request, secret)
    return None


async def get_principal(request: Request) -> Principal:
    principal = await _admitted_caller(request)
    if principal is None:
        raise Unauthenticated("You did not pass an authentication token")
    return principal


async def get_optional_principal(request: Request) -> Principal | None:
    return await _admitted_caller(request)


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
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    server = scope.get("server")
    root_path = scope.get("app_root_path", scope.get("root_path", ""))
    return _base_url(scope.get("scheme", "http"), tuple(server) if server else server, host, root_path)


@lru_cache(maxsize=256)
def _base_url(scheme: str, server: tuple[str, int | None] | None, host: bytes | None, root_path: str) -> str:
    """``request.base_url`` as Starlette makes it from these parts of the scope (all it reads), made once
    for each (it parses the Host header and builds two URLs: ~4 us a request)."""
    scope: Scope = {"type": "http", "scheme": scheme, "server": server, "path": "/", "root_path": root_path}
    scope["headers"] = [(b"host", host)] if host is not None else []
    return str(Request(scope).base_url).rstrip("/")


BaseUrl = Annotated[str, Depends(get_base_url)]


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated API call: the caller, the base URL it reached this server at, the resources."""

    principal: Principal
    base_url: str
    resources: Resources


async def get_call(request: Request) -> Call:
    """``CurrentPrincipal``, ``BaseUrl`` and ``ResourcesDep`` in one dependency solve (the hot path)."""
    return Call(await get_principal(request), await get_base_url(request), get_resources(request))


CallDep = Annotated[Call, Depends(get_call)]
