"""The app factory: the FastAPI app, its middleware and its routers; the lifespan opens the resources."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import fields
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from cogport.api import presenters, problems
from cogport.api.access import AccessLog
from cogport.api.body_limits import MIB, BodyLimit
from cogport.api.direct_creates import DirectCreates
from cogport.api.principal_cache import PrincipalCache
from cogport.api.rate_limits import RateLimiter
from cogport.api.routes import (
    account,
    admin,
    builds,
    collections,
    deployments,
    file_outputs,
    files,
    hardware,
    metrics,
    models,
    predictions,
    search,
    streams,
    trainings,
    versions,
    webhooks,
)
from cogport.db.tables import Prediction
from cogport.files import urls as file_urls
from cogport.metrics.registry import Metrics
from cogport.resources import Resources, open_resources
from cogport.settings import Settings
from cogport.web import auth as web_auth
from cogport.web import pages as web_pages
from cogport.web import render as web_render

log = logging.getLogger(__name__)

ROUTERS = (
    predictions,  # first: the router is matched route by route, and a prediction is the hot path
    account,
    hardware,
    webhooks,
    collections,
    models,
    versions,
    search,
    admin,
    files,
    file_outputs,
    trainings,
    deployments,
    streams,
    builds,
    metrics,
)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings, app.state.metrics, render=webhook_body(settings)) as resources:
            publish(app, resources)
            if settings.web.enabled and settings.port:
                url = settings.public_url or f"http://{settings.host}:{settings.port}"
                log.info("the web playground: %s/", url.rstrip("/"))
            yield

    app = FastAPI(
        title="cogport",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        # opentelemetry-api comes without an SDK: FastAPI's per-request check for a provider is pure cost.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.principals = PrincipalCache()
    app.state.metrics = Metrics() if settings.metrics.enabled else None
    app.state.rate_limiter = None  # set by the lifespan (it needs the writer)
    # innermost: the create routes' usual requests, answered without FastAPI's routing and dependency solving
    app.add_middleware(DirectCreates)
    problems.install(app)
    # the body cap, and NUL in a path or query: 404/400, never a PostgreSQL 500
    app.add_middleware(BodyLimit, limit_bytes=int(settings.max_request_body_mb * MIB))
    # outermost: it sees every request's end, errors included (one request log line, the HTTP metrics)
    app.add_middleware(AccessLog, metrics=app.state.metrics, json_lines=settings.log_format == "json")
    for module in ROUTERS:
        app.include_router(module.router)
    if settings.web.enabled:
        # Last: ``/{owner}/{name}`` must not shadow an API path.
        app.mount(web_render.STATIC_PATH, StaticFiles(directory=web_render.STATIC_DIR), name="static")
        app.include_router(web_auth.router)
        app.include_router(web_pages.router)
    return app


def webhook_body(settings: Settings) -> Callable[[Prediction], dict[str, Any]]:
    """A run as its webhooks carry it: output file URLs on the public base URL."""

    def render(row: Prediction) -> dict[str, Any]:
        return presenters.run(row, file_urls.public_base_url(settings), settings)

    return render


def publish(app: FastAPI, resources: Resources) -> None:
    """``app.state.resources`` for the routes' dependencies (:mod:`cogport.api.deps`), the rate limiter
    (it writes through the writer), and each resource by name for tests and tools."""
    app.state.resources = resources
    registry = resources.metrics
    on_limited = registry.rate_limited_hit if registry is not None else None
    app.state.rate_limiter = RateLimiter(resources.settings.rate_limit, resources.writer, on_limited=on_limited)
    for field in fields(resources):
        setattr(app.state, field.name, getattr(resources, field.name))
