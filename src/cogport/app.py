"""The app factory. Its lifespan owns every resource: database, storage, services."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from cogport import bootstrap, netfetch
from cogport.api import presenters, problems
from cogport.api.access import AccessLog
from cogport.api.body_limits import MIB, BodyLimit
from cogport.api.deps import reject_nul
from cogport.api.principal_cache import PrincipalCache
from cogport.api.rate_limits import RateLimiter
from cogport.api.routes import (
    account,
    admin,
    collections,
    deployments,
    file_outputs,
    files,
    models,
    predictions,
    search,
    streams,
    trainings,
    versions,
    webhooks,
)
from cogport.api.routes import builds as build_routes
from cogport.api.routes import hardware as hardware_routes
from cogport.api.routes import metrics as metrics_routes
from cogport.backends.base import Backend
from cogport.backends.local import LocalBackend
from cogport.db.engine import Database
from cogport.db.writer import GroupWriter
from cogport.files import urls as file_urls
from cogport.files.signing import signing_key
from cogport.files.tokens import UploadTokens
from cogport.lifecycle.autoscaler import Autoscaler
from cogport.lifecycle.dispatcher import Dispatcher
from cogport.lifecycle.files_in import InputFetcher, input_policy
from cogport.lifecycle.files_out import OutputFiles
from cogport.lifecycle.hub import Hub
from cogport.lifecycle.notify import Notifier
from cogport.lifecycle.recorder import Recorder
from cogport.lifecycle.runs import Runs, hub_hook
from cogport.lifecycle.status import Transitions
from cogport.lifecycle.watch import Watcher
from cogport.metrics.registry import Metrics
from cogport.netpolicy import HostPolicy
from cogport.ops import deployments as deployment_ops
from cogport.services.base import Services
from cogport.services.builder import Builder
from cogport.services.examples import ExampleRegistrar
from cogport.services.janitor import Janitor
from cogport.services.retention import RetentionService
from cogport.settings import Settings
from cogport.storage.factory import open_storage
from cogport.web import auth as web_auth
from cogport.web import pages as web_pages
from cogport.web import render as web_render
from cogport.webhooks.delivery import DeliveryService
from cogport.webhooks.sender import WebhookAnnouncer
from cogport.webhooks.sender import new_client as new_webhook_client

log = logging.getLogger(__name__)


def node_name(settings: Settings) -> str:
    """This process's name in the queue's claims: unique per process, readable in the database."""
    return settings.node_id or f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings)
        await database.migrate()
        token = await bootstrap.ensure_admin(database, settings)
        if token is not None:
            bootstrap.announce_admin_token(token, settings.admin_username)
        storage = await open_storage(settings)
        services = Services()
        services.add(Builder(database, settings, storage))
        if settings.register_examples:
            services.add(ExampleRegistrar(database, settings, on_queued=lambda: services.wake("builder")))
        services.add(RetentionService(database, storage, settings))
        upload_tokens = UploadTokens(signing_key(settings))
        hub = Hub()
        writer = GroupWriter(database)
        transitions = Transitions()
        observed: Metrics | None = app.state.metrics
        backend: Backend
        if settings.backend == "ray":
            from cogport.backends.raycluster import RayBackend  # needs the cluster extra

            backend = RayBackend(
                settings,
                file_sink=OutputFiles(database, storage, settings),
                on_capacity=lambda: dispatcher.capacity_changed(),
            )
        else:
            backend = LocalBackend(
                settings,
                upload_url=file_urls.upload_url(settings, upload_tokens.issue("local")),
                file_sink=OutputFiles(database, storage, settings),
                on_capacity=lambda: dispatcher.capacity_changed(),
                node=socket.gethostname(),
                on_ready=observed.instance_ready if observed is not None else None,
            )
        recorder = Recorder(
            database, writer, transitions, hub, storage, settings, on_finished=lambda: dispatcher.capacity_changed()
        )
        fetch_client = netfetch.client()
        dispatcher = Dispatcher(
            database,
            writer,
            transitions,
            backend,
            recorder,
            storage,
            settings,
            node=node_name(settings),
            lease=settings.lease_seconds,
            fetcher=InputFetcher(database, storage, settings, fetch_client, input_policy(settings)),
        )
        hooks = settings.webhooks
        webhook_client = new_webhook_client(hooks)
        webhook_policy = HostPolicy.of(hooks.allow_private_networks, hooks.allowed_hosts, hooks.denied_hosts)
        announcer = WebhookAnnouncer(
            database,
            webhook_client,
            render=lambda row: presenters.run(row, file_urls.public_base_url(settings), settings),
            wake=lambda: services.wake("webhooks"),
            policy=webhook_policy,
            settings=hooks,
        )
        # Other API processes on the same PostgreSQL database hear of changes and cancels (off on SQLite).
        notifier = Notifier(
            settings,
            hub,
            node=dispatcher.node,
            on_cancel=dispatcher.cancel_requested,
            on_reconnect=dispatcher.housekeeping_soon,
        )
        # Every announcement of a change goes through these, registered once (see lifecycle/status.py).
        transitions.within(announcer.within)
        transitions.after_commit(hub_hook(hub))
        transitions.after_commit(announcer.after_commit)
        if notifier.enabled:
            transitions.after_commit(notifier.after_commit)
        if observed is not None:
            transitions.after_commit(observed.after_commit)  # the run counters (cogport/metrics)
            announcer.on_outcome = observed.webhook_outcome
        dispatcher.deployment_hardware = deployment_ops.hardware_of
        services.add(Janitor(database, storage, writer, transitions, backend, dispatcher.weights))
        services.add(dispatcher)
        services.add(Autoscaler(database, backend, dispatcher))
        services.add(DeliveryService(database, webhook_client, announcer, hooks, writer))
        app.state.database = database
        app.state.webhook_policy = webhook_policy
        app.state.storage = storage
        app.state.upload_tokens = upload_tokens
        app.state.hub = hub
        app.state.backend = backend
        app.state.writer = writer
        app.state.transitions = transitions
        app.state.rate_limiter = RateLimiter(
            settings.rate_limit,
            writer,
            on_limited=observed.rate_limited_hit if observed is not None else None,
        )
        app.state.recorder = recorder
        app.state.notifier = notifier
        app.state.watcher = Watcher(database, hub, held=recorder.in_hand)  # streams' runs held elsewhere
        app.state.runs = Runs(
            database,
            writer,
            transitions,
            hub,
            dispatcher,
            backend,
            storage,
            settings,
            notify_cancel=notifier.cancel if notifier.enabled else None,
        )
        app.state.services = services
        await writer.start()
        await backend.start()
        await notifier.start()
        services.start()
        if settings.web.enabled and settings.port:
            log.info(
                "the web playground: %s/",
                (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/"),
            )
        try:
            yield
        finally:
            await app.state.watcher.close()
            await services.stop()
            await backend.stop()  # running jobs end (failed: interrupted) through the writer
            await writer.stop()
            await notifier.close()  # after the last writes: the other processes hear of them
            await announcer.close()
            await webhook_client.aclose()
            await fetch_client.aclose()
            await storage.close()
            await database.dispose()

    app = FastAPI(
        title="cogport",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        dependencies=[Depends(reject_nul)],  # NUL in a path or query: 404/400, never a PostgreSQL 500
        # opentelemetry-api comes without an SDK: FastAPI's per-request check for a provider is pure cost.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.principals = PrincipalCache()
    app.state.metrics = Metrics() if settings.metrics.enabled else None
    app.state.rate_limiter = None  # set by the lifespan (it needs the writer)
    problems.install(app)
    app.add_middleware(BodyLimit, limit_bytes=int(settings.max_request_body_mb * MIB))
    # outermost: it sees every request's end, errors included (one request log line, the HTTP metrics)
    app.add_middleware(AccessLog, metrics=app.state.metrics, json_lines=settings.log_format == "json")
    routers = (
        predictions,  # first: the router is matched route by route, and a prediction is the hot path
        account,
        hardware_routes,
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
    )
    for module in routers:
        app.include_router(module.router)
    app.include_router(build_routes.router)
    app.include_router(metrics_routes.router)
    if settings.web.enabled:
        # Last: ``/{owner}/{name}`` must not shadow an API path.
        app.mount(web_render.STATIC_PATH, StaticFiles(directory=web_render.STATIC_DIR), name="static")
        app.include_router(web_auth.router)
        app.include_router(web_pages.router)
    return app
