"""Webhook targets (scheme, host and port) and the slots that bound the requests in flight to each.

A receiver that answers slowly or never holds at most ``per_target`` requests of a process at once; the
other targets' requests go on (the terminal sender does not claim rows of a full target, see
:func:`cogport.ops.webhooks.claim`, and best-effort sends wait for a slot within their deadline).
"""

from __future__ import annotations

import asyncio
from collections import deque

from cogport.ops.webhooks import target_of

__all__ = ["Targets", "target_of"]


class Targets:
    """At most ``per_target`` slots taken per target at once; waiters are served first come, first served."""

    def __init__(self, per_target: int) -> None:
        self.per_target = per_target
        self.busy: dict[str, int] = {}
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}

    def room(self, target: str) -> int:
        """Slots free at ``target`` now, less those waited for."""
        return self.per_target - self.busy.get(target, 0) - len(self._waiters.get(target, ()))

    def full(self) -> list[str]:
        """The targets with no free slot."""
        return [target for target in self.busy if self.room(target) <= 0]

    def try_take(self, target: str) -> bool:
        if self.room(target) <= 0:
            return False
        self.busy[target] = self.busy.get(target, 0) + 1
        return True

    async def take(self, target: str) -> None:
        """Wait for a slot at ``target`` (cancel the wait with a timeout around it)."""
        if self.try_take(target):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiters.setdefault(target, deque())
        queue.append(future)
        try:
            await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.give(target)  # the slot was handed over as the wait was canceled: pass it on
            elif future in queue:
                queue.remove(future)
            raise
        finally:
            if not queue:
                self._waiters.pop(target, None)

    def give(self, target: str) -> None:
        """Free a slot: it goes to the longest waiter, if any."""
        queue = self._waiters.get(target)
        while queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(None)  # the slot passes on: busy stays as it is
                return
        count = self.busy.get(target, 0) - 1
        if count > 0:
            self.busy[target] = count
        else:
            self.busy.pop(target, None)
