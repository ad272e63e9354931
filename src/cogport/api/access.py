"""The request log and the HTTP metrics: one ASGI middleware sees every request end.

One line per request on the ``cogport.access`` logger: method, route template (never the raw path,
so no query string, id or capability token in it), status, duration in milliseconds and the caller's
username (``-`` when anonymous). Nothing of the request's headers or body is logged. With
``COGPORT_LOG_FORMAT=json`` the message is a JSON object; :mod:`cogport.logs` writes it as it is.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cogport.metrics.registry import Metrics

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

__all__ = ["ACCOUNT_SCOPE_KEY", "UNMATCHED", "AccessLog", "route_of"]

log = logging.getLogger("cogport.access")

ACCOUNT_SCOPE_KEY = "cogport.account"
"""Where authentication leaves the caller's username in the ASGI scope (api/deps.py)."""
UNMATCHED = "unmatched"
"""The route label of requests no route matched (404s for unknown paths)."""


def route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class AccessLog:
    def __init__(self, app: ASGIApp, *, metrics: Metrics | None, json_lines: bool = False) -> None:
        self.app = app
        self.metrics = metrics
        self.json_lines = json_lines
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        """The metrics' children by (route, method, status): ``labels()`` costs more than the rest of a request's
        record (route templates and methods are few)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self._record(scope, status, time.perf_counter() - began)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        method = str(scope.get("method", ""))
        route = route_of(scope)
        if self.metrics is not None:
            series = self._series.get((route, method, status))
            if series is None:
                series = (
                    self.metrics.http_requests.labels(route=route, method=method, status=str(status)),
                    self.metrics.http_duration.labels(route=route, method=method),
                )
                self._series[route, method, status] = series
            series[0].inc()
            series[1].observe(seconds)
        if not log.isEnabledFor(logging.INFO):
            return
        account = str(scope.get(ACCOUNT_SCOPE_KEY) or "-")
        fields = {
            "method": method,
            "route": route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "account": account,
        }
        if self.json_lines:
            line = json.dumps({"time": datetime.now(UTC).isoformat(), "logger": log.name, **fields})
        else:
            line = f"{method} {route} {status} {fields['duration_ms']:.2f}ms {account}"
        log.info(line, extra={"access": fields})
