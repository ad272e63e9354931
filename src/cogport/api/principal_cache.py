"""A short-lived cache of authenticated callers, so a request costs no token lookup most of the time.

Entries live ``ttl`` seconds (default 5). Admin changes to accounts, members or tokens clear the cache
of the process that made them; other processes see such changes within ``ttl``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cogport.identifiers import hash_token
from cogport.ops.principals import Principal


class PrincipalCache:
    def __init__(
        self, ttl: float = 5.0, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock  # seconds; tests pass their own to step over the TTL without waiting for it
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, token: str) -> Principal | None:
        entry = self._entries.get(hash_token(token))
        if entry is None:
            return None
        expires, principal = entry
        if expires < self.clock():
            self._entries.pop(hash_token(token), None)
            return None
        return principal

    def put(self, token: str, principal: Principal) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[hash_token(token)] = (self.clock() + self.ttl, principal)

    def forget(self, token: str) -> None:
        self._entries.pop(hash_token(token), None)

    def clear(self) -> None:
        self._entries.clear()
