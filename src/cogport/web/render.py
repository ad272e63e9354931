"""Pages as HTML responses: one Jinja2 environment (autoescaped), and the headers every page carries."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse

from cogport.api.deps import get_settings
from cogport.ops.principals import Principal

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
STATIC_PATH = "/-/static"


@functools.cache
def templates() -> Jinja2Templates:
    """The one Jinja2 environment, made when the first page renders: importing Jinja2 is not paid at start."""
    from fastapi.templating import Jinja2Templates  # deliberately lazy (start time, docs/operations.md)

    return Jinja2Templates(directory=HERE / "templates")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def security_headers(request: Request) -> dict[str, str]:
    """Only this server's own scripts, styles and connections; media also from its public URL (file outputs
    and streams are addressed there) and from data:/blob: URLs."""
    public_url = get_settings(request).public_url
    extra = f" {_origin(public_url)}" if public_url else ""
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src 'self' data: blob:{extra}; media-src 'self' data: blob:{extra}; connect-src 'self'{extra}; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def page(
    request: Request,
    template: str,
    principal: Principal | None,
    *,
    title: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    return templates().TemplateResponse(
        request,
        template,
        {"principal": principal, "title": title, "static": STATIC_PATH, **context},
        status_code=status_code,
        headers=security_headers(request),
    )
