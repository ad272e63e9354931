"""Connection pools per target behind the webhook client: kept-alive connections to each receiver, in pools
that stay small. httpcore's pool does work quadratic in its connections on every request (measured here:
2,000 posts to a local receiver from 8 connections in one pool 630/s, 16 in one pool 184/s, 32: 110/s; 16
as four pools of four: 555/s), so a target's ``per_target`` connections are split into pools of at most
``CONNECTIONS_PER_POOL``, taken in turn.

A target here is where the connection goes: scheme, the address :func:`~cogport.netpolicy.pinned` put in
the URL, port and TLS server name. A pool unused for ``idle_pool`` seconds is closed when a new one is made.
"""

from __future__ import annotations

import importlib.util
import sys
import time

import httpx

CONNECTIONS_PER_POOL = 4
IDLE_POOL = 120.0
"""Seconds after its last request before a target's pool may be closed (longer than any send may take)."""

PoolKey = tuple[str, str, int | None, str]


def _missing_sniffio_fails_fast() -> None:
    """httpcore tries ``import sniffio`` several times per request; anyio 4 no longer brings it, and a
    failing import searches every ``sys.path`` entry each time (measured: a third of the sender's CPU).
    A ``None`` in ``sys.modules`` makes the import fail at once, as it would anyway."""
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


class PerTargetTransport(httpx.AsyncBaseTransport):
    def __init__(self, per_target: int, keepalive_expiry: float = 30.0, idle_pool: float = IDLE_POOL) -> None:
        _missing_sniffio_fails_fast()
        size = min(per_target, CONNECTIONS_PER_POOL)
        self.shards = -(-per_target // size)
        self.limits = httpx.Limits(
            max_connections=size, max_keepalive_connections=size, keepalive_expiry=keepalive_expiry
        )
        self.idle_pool = max(idle_pool, keepalive_expiry)
        self._pools: dict[PoolKey, tuple[_Shards, float]] = {}

    @property
    def pools(self) -> int:
        return len(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        key = (url.scheme, url.host, url.port, str(request.extensions.get("sni_hostname", "")))
        now = time.monotonic()
        found = self._pools.get(key)
        if found is None:
            await self._close_idle(now)
            pools = [httpx.AsyncHTTPTransport(limits=self.limits, trust_env=False) for _ in range(self.shards)]
            found = (_Shards(pools), now)
        self._pools[key] = (found[0], now)
        return await found[0].next().handle_async_request(request)

    async def _close_idle(self, now: float) -> None:
        """Close the pools not used for ``idle_pool`` seconds: their last request ended long ago (every send
        has a shorter deadline), so only idle connections are left."""
        for key, (shards, used) in list(self._pools.items()):
            if now - used > self.idle_pool:
                del self._pools[key]
                await shards.aclose()

    async def aclose(self) -> None:
        every = [shards for shards, _ in self._pools.values()]
        self._pools.clear()
        for shards in every:
            await shards.aclose()


class _Shards:
    """A target's pools, taken in turn."""

    def __init__(self, pools: list[httpx.AsyncHTTPTransport]) -> None:
        self.pools = pools
        self._turn = 0

    def next(self) -> httpx.AsyncHTTPTransport:
        self._turn = (self._turn + 1) % len(self.pools)
        return self.pools[self._turn]

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()
