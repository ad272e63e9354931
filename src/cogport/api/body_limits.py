"""What every request is held to before it reaches a route, in one ASGI middleware:

* the body cap: ``COGPORT_MAX_REQUEST_BODY_MB`` for every request (413 problem JSON above it), but the routes
  that carry files, which stream against limits of their own (uploads: ``COGPORT_FILES_MAX_BYTES``; model
  pushes: ``COGPORT_BUILD__MAX_SOURCE_MB``; coglet's output uploads to the loopback receiver);
* no NUL character in the path (404) or the query (400): PostgreSQL text can neither store nor compare one,
  so no resource has one in its name. Checked here rather than as an app-wide FastAPI dependency: a
  dependency costs each request a solve (~20 us), this a substring test.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cogport.api.problems import error_response, problem
from cogport.errors import BadRequest, CogportError, NotFound, PayloadTooLarge

MIB = 1024 * 1024
OWN_LIMITS = (
    ("POST", re.compile(r"^/v1/files/?$")),
    ("POST", re.compile(r"^/v1/models/[^/]+/[^/]+/versions/?$")),
    ("PUT", re.compile(r"^/internal/uploads/")),
)
_OWN_PREFIXES = ("/v1/files", "/v1/models/", "/internal/uploads/")
"""Every path of :data:`OWN_LIMITS` starts so (most requests are told apart by this alone)."""


def nul_refusal(scope: Scope) -> CogportError | None:
    """The error for a NUL character in the path or the query of ``scope``, if it has one."""
    if "\x00" in scope.get("path", ""):
        return NotFound()
    query: bytes = scope.get("query_string") or b""
    if (b"%00" in query or b"\x00" in query) and any(
        "\x00" in key or "\x00" in value for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    ):
        return BadRequest("Query parameters must not contain NUL characters")
    return None


class BodyLimit:
    """ASGI middleware: refuses a ``Content-Length`` above the cap at once, and a body that streams past it
    (chunked) as soon as it does."""

    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    def _exempt(self, scope: Scope) -> bool:
        path: str = scope.get("path", "")
        if not path.startswith(_OWN_PREFIXES):
            return False
        method = scope.get("method", "")
        return any(method == m and pattern.match(path) for m, pattern in OWN_LIMITS)

    def _error(self) -> PayloadTooLarge:
        limit = self.limit_bytes / MIB
        return PayloadTooLarge(f"The request body is larger than {limit:.3g} MB (COGPORT_MAX_REQUEST_BODY_MB)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = nul_refusal(scope)
        if refused is not None:
            await error_response(refused)(scope, receive, send)
            return
        if self._exempt(scope):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers") or []:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit_bytes:
                error = self._error()
                await problem(413, error.instance_title, error.detail)(scope, receive, send)
                return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit_bytes:
                    raise self._error()  # inside the app: answered by the one error handler
            return message

        await self.app(scope, counted, send)
