"""The request body cap: ``COGPORT_MAX_REQUEST_BODY_MB`` for every request (413 problem JSON above it), but
the routes that carry files, which stream against limits of their own (uploads: ``COGPORT_FILES_MAX_BYTES``;
model pushes: ``COGPORT_BUILD__MAX_SOURCE_MB``; coglet's output uploads to the loopback receiver)."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cogport.api.problems import problem
from cogport.errors import PayloadTooLarge

MIB = 1024 * 1024
OWN_LIMITS = (
    ("POST", re.compile(r"^/v1/files/?$")),
    ("POST", re.compile(r"^/v1/models/[^/]+/[^/]+/versions/?$")),
    ("PUT", re.compile(r"^/internal/uploads/")),
)


class BodyLimit:
    """ASGI middleware: refuses a ``Content-Length`` above the cap at once, and a body that streams past it
    (chunked) as soon as it does."""

    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    def _exempt(self, scope: Scope) -> bool:
        method, path = scope.get("method", ""), scope.get("path", "")
        return any(method == m and pattern.match(path) for m, pattern in OWN_LIMITS)

    def _error(self) -> PayloadTooLarge:
        limit = self.limit_bytes / MIB
        return PayloadTooLarge(f"The request body is larger than {limit:.3g} MB (COGPORT_MAX_REQUEST_BODY_MB)")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._exempt(scope):
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
