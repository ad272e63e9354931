"""The background loop every service is (:class:`~cogport.background.Service`) and the group that starts
them: they live in :mod:`cogport.background`, low in the layers, so the lifecycle's loops can be services
too without importing this package."""

from __future__ import annotations

from cogport.background import Service, Services

__all__ = ["Service", "Services"]
