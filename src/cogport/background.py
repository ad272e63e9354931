"""A background loop that runs every ``interval`` seconds or as soon as it is woken.

A round that fails is logged once per distinct failure a minute (:func:`cogport.logs.failure`: a database
outage is one line, not a traceback per round), and the loop carries on at its next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod

from cogport import logs
from cogport.db import faults

log = logging.getLogger(__name__)


class Service(ABC):
    name: str = "service"
    interval: float = 5.0

    def __init__(self) -> None:
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @abstractmethod
    async def run_once(self) -> bool:
        """Do one round of work; return True when there may be more to do at once."""

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"cogport-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                more = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                what = faults.describe(exc)
                known = faults.is_outage(exc)
                message = f"{self.name} failed ({what}); retrying every {self.interval:g}s"
                logs.failure(log, f"{self.name}: {what}", message, exc=exc, traceback=not known)
                more = False
            if more:
                await asyncio.sleep(0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval)
            self._wake.clear()


class Services:
    """The set of services of one app, started and stopped together."""

    def __init__(self) -> None:
        self._services: dict[str, Service] = {}

    def add(self, service: Service) -> None:
        self._services[service.name] = service

    def get(self, name: str) -> Service | None:
        return self._services.get(name)

    def wake(self, name: str) -> None:
        service = self._services.get(name)
        if service is not None:
            service.wake()

    def start(self) -> None:
        for service in self._services.values():
            service.start()

    async def stop(self) -> None:
        for service in reversed(list(self._services.values())):
            await service.stop()
