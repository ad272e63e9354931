"""Per-account rate limits, as Replicate has them: creates, and every other authenticated request.

Fixed one-minute windows counted in the database (``rate_limit_windows``): one UPSERT ... RETURNING per
authenticated request, through the group writer (so on a busy server the counts share commits with the
hot path's other writes), and every API process sharing the database shares the counts. A fixed window
lets a client make up to twice the limit across a window's edge; the limit is otherwise exact (no
in-process cache: a process that skipped the database for "far below the limit" accounts could not
count what it skipped, and another process then could not see it).

The ``limits`` library was not used: it has no PostgreSQL storage (memory, Redis, Memcached, MongoDB
only), and these limits must hold across API processes that share nothing but the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from starlette.requests import Request

from cogport.db.writer import GroupWriter, Tx
from cogport.errors import RateLimited
from cogport.ops import rate_limits as rate_ops
from cogport.ops.principals import Principal
from cogport.settings import RateLimitSettings

__all__ = ["CREATE_ROUTES", "WINDOW", "Kind", "RateLimiter", "kind_of"]

WINDOW = 60
"""Seconds per window (the limits are per minute)."""

Kind = Literal["create", "request"]

CREATE_ROUTES = frozenset(
    {
        ("POST", "/v1/predictions"),
        ("POST", "/v1/models/{owner}/{name}/predictions"),
        ("POST", "/v1/deployments/{owner}/{name}/predictions"),
        ("POST", "/v1/models/{owner}/{name}/versions/{version_id}/trainings"),
    }
)
"""The routes ``creates_per_minute`` limits (route templates); every other one counts as a request."""

_CHECKED = "cogport.rate_limit_checked"


def kind_of(request: Request) -> Kind:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return "create" if (request.method, path) in CREATE_ROUTES else "request"


class RateLimiter:
    def __init__(
        self,
        settings: RateLimitSettings,
        writer: GroupWriter,
        *,
        on_limited: Callable[[Kind], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.on_limited = on_limited
        self.clock = clock
        self._pruned_before = 0

    def limit(self, kind: Kind) -> int:
        return self.settings.creates_per_minute if kind == "create" else self.settings.requests_per_minute

    async def check(self, request: Request, principal: Principal) -> None:
        """Count this request against its account's limit (once per request); :class:`RateLimited` beyond it."""
        if principal.is_admin or request.scope.get(_CHECKED):
            return
        request.scope[_CHECKED] = True
        kind = kind_of(request)
        limit = self.limit(kind)
        if limit <= 0:
            return
        now = self.clock()
        window = int(now) // WINDOW * WINDOW
        prune = window - WINDOW if window - WINDOW > self._pruned_before else None
        if prune is not None:
            self._pruned_before = prune  # once per window and process: the windows before the last go

        def count(tx: Tx) -> int:
            if prune is not None:
                rate_ops.prune(tx, prune)
            return rate_ops.hit(tx, principal.id, kind, window)

        if await self.writer.run(count) > limit:
            if self.on_limited is not None:
                self.on_limited(kind)
            retry_after = max(1, int(window + WINDOW - now + 0.999))
            what = "prediction and training creates" if kind == "create" else "requests"
            raise RateLimited(
                f"Request was throttled: more than {limit} {what} per minute. "
                f"Expected available in {retry_after} second{'s' if retry_after != 1 else ''}.",
                retry_after=retry_after,
            )
