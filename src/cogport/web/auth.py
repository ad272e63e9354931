"""Signing in and out: an API token typed into a form opens a session; the browser keeps only an
HttpOnly, SameSite=Strict cookie. The token never travels in a URL and the page's scripts never see it."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from cogport.api.deps import (
    SESSION_COOKIE,
    SessionDep,
    SettingsDep,
    authenticate_session,
    principal_cache,
    same_origin,
    session_cache_key,
)
from cogport.errors import Unauthenticated
from cogport.ops import web_sessions
from cogport.ops.principals import Principal
from cogport.web.render import page

router = APIRouter(include_in_schema=False)

SIGN_IN_PATH = "/-/sign-in"


def local_path(target: str | None) -> str:
    """Where to go after signing in: a path on this server, never another site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


async def page_principal(request: Request) -> Principal | None:
    """The signed-in caller of a page, or ``None`` (no cookie, or a session that has ended)."""
    secret = request.cookies.get(SESSION_COOKIE)
    if not secret:
        return None
    try:
        return await authenticate_session(request, secret)
    except Unauthenticated:
        return None


def sign_in_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{SIGN_IN_PATH}?next={quote(target, safe='/')}", status_code=303)


@router.get(SIGN_IN_PATH)
async def sign_in_form(request: Request, next: str | None = None) -> Response:
    principal = await page_principal(request)
    if principal is not None:
        return RedirectResponse(local_path(next), status_code=303)
    return page(request, "sign_in.html", None, title="Sign in", next=local_path(next))


@router.post(SIGN_IN_PATH)
async def sign_in(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    if not same_origin(request):
        return page(
            request,
            "sign_in.html",
            None,
            title="Sign in",
            next="/",
            status_code=403,
            error="Sign in from this server's own sign-in page.",
        )
    try:
        secret = await web_sessions.open_session(session, token, lifetime=timedelta(days=settings.web.session_days))
    except Unauthenticated:
        return page(
            request,
            "sign_in.html",
            None,
            title="Sign in",
            next=local_path(next),
            status_code=401,
            error="That API token is not valid.",
        )
    response = RedirectResponse(local_path(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(settings.web.session_days * 86400),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https" or (settings.public_url or "").startswith("https://"),
    )
    return response


@router.post("/-/sign-out")
async def sign_out(request: Request, session: SessionDep) -> Response:
    secret = request.cookies.get(SESSION_COOKIE)
    if secret and same_origin(request):
        await web_sessions.close_session(session, secret)
        principal_cache(request).forget(session_cache_key(secret))
    response: Response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
