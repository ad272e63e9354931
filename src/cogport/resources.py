"""The server's resources: built in dependency order by :func:`open_resources`, closed in reverse.

The order, each line using only what is above it::

    database (migrated, the admin account ensured), storage, the input fetcher, the webhook HTTP client
    hub, group writer, transitions, upload tokens, services (the group; its members are added below)
    backend, recorder             tell the dispatcher of capacity through ``capacity_changed``, a Hook
    dispatcher                    connected to that hook once it exists
    webhook announcer, notifier   announce every committed transition (the hooks registered on Transitions)
    runs, watcher                 what the routes use
    the background services       builder, examples, retention, janitor, dispatcher, autoscaler, deliveries

Closing runs the stack backwards: the watcher, the services, the backend (running jobs end through the
writer), the writer, the notifier (after the last writes: other processes hear of them), the announcer,
the webhook client, the input fetcher (its client), storage, the database. A start that fails part way closes
what it had opened.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from functools import partial

from cogport import bootstrap
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
from cogport.storage.base import Storage
from cogport.storage.factory import open_storage
from cogport.webhooks.delivery import DeliveryService
from cogport.webhooks.sender import Render, WebhookAnnouncer
from cogport.webhooks.sender import new_client as new_webhook_client


@dataclass(frozen=True, slots=True)
class Resources:
    """What the routes and the background services share, one per app (``app.state.resources``)."""

    settings: Settings
    metrics: Metrics | None
    database: Database
    storage: Storage
    upload_tokens: UploadTokens
    hub: Hub
    writer: GroupWriter
    transitions: Transitions
    backend: Backend
    recorder: Recorder
    dispatcher: Dispatcher
    runs: Runs
    watcher: Watcher
    notifier: Notifier
    services: Services
    webhook_policy: HostPolicy


class Hook:
    """A callback handed out before its target exists, connected once when it does (the backend and the
    recorder are built before the dispatcher they tell of capacity). Until then a call does nothing."""

    __slots__ = ("_target",)

    def __init__(self) -> None:
        self._target: Callable[[], None] | None = None

    def connect(self, target: Callable[[], None]) -> None:
        if self._target is not None:
            raise RuntimeError("this hook is connected already")
        self._target = target

    def __call__(self) -> None:
        if self._target is not None:
            self._target()


def node_name(settings: Settings) -> str:
    """This process's name in the queue's claims: unique per process, readable in the database."""
    return settings.node_id or f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@asynccontextmanager
async def open_resources(settings: Settings, metrics: Metrics | None, render: Render) -> AsyncIterator[Resources]:
    """Build, start and (on leaving) close every resource; ``render`` is a run as its webhook body."""
    async with AsyncExitStack() as stack:
        database = Database(settings)
        stack.push_async_callback(database.dispose)
        await database.migrate()
        token = await bootstrap.ensure_admin(database, settings)
        if token is not None:
            bootstrap.announce_admin_token(token, settings.admin_username)
        storage = await open_storage(settings)
        stack.push_async_callback(storage.close)
        fetcher = InputFetcher(database, storage, settings, input_policy(settings))
        stack.push_async_callback(fetcher.aclose)
        hooks = settings.webhooks
        webhook_client = new_webhook_client(hooks)
        stack.push_async_callback(webhook_client.aclose)

        hub, writer, transitions = Hub(), GroupWriter(database), Transitions()
        upload_tokens = UploadTokens(signing_key(settings))
        services = Services()
        capacity_changed = Hook()
        output_files = OutputFiles(database, storage, settings)
        backend = _backend(settings, metrics, upload_tokens, output_files, capacity_changed)
        recorder = Recorder(database, writer, transitions, hub, storage, settings, on_finished=capacity_changed)
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
            fetcher=fetcher,
        )
        dispatcher.deployment_hardware = deployment_ops.hardware_of
        capacity_changed.connect(dispatcher.capacity_changed)

        webhook_policy = HostPolicy.of(hooks.allow_private_networks, hooks.allowed_hosts, hooks.denied_hosts)
        announcer = WebhookAnnouncer(
            database, webhook_client, render, partial(services.wake, "webhooks"), webhook_policy, hooks
        )
        stack.push_async_callback(announcer.close)
        # Other API processes on the same PostgreSQL database hear of changes and cancels (off on SQLite).
        notifier = Notifier(
            settings,
            hub,
            node=dispatcher.node,
            on_cancel=dispatcher.cancel_requested,
            on_reconnect=dispatcher.housekeeping_soon,
        )
        stack.push_async_callback(notifier.close)  # after the writer's stop, below: see the module docstring
        _announce(transitions, hub, announcer, notifier, metrics)
        runs = Runs(
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
        watcher = Watcher(database, hub, held=recorder.in_hand)  # streams' runs held elsewhere

        services.add(Builder(database, settings, storage))
        if settings.register_examples:
            services.add(ExampleRegistrar(database, settings, on_queued=partial(services.wake, "builder")))
        services.add(RetentionService(database, storage, settings))
        services.add(Janitor(database, storage, writer, transitions, backend, dispatcher.weights))
        services.add(dispatcher)
        services.add(Autoscaler(database, backend, dispatcher))
        services.add(DeliveryService(database, webhook_client, announcer, hooks, writer))

        await writer.start()
        stack.push_async_callback(writer.stop)
        await backend.start()
        stack.push_async_callback(backend.stop)  # running jobs end (failed: interrupted) through the writer
        await notifier.start()
        services.start()
        stack.push_async_callback(services.stop)
        stack.push_async_callback(watcher.close)
        yield Resources(
            settings=settings,
            metrics=metrics,
            database=database,
            storage=storage,
            upload_tokens=upload_tokens,
            hub=hub,
            writer=writer,
            transitions=transitions,
            backend=backend,
            recorder=recorder,
            dispatcher=dispatcher,
            runs=runs,
            watcher=watcher,
            notifier=notifier,
            services=services,
            webhook_policy=webhook_policy,
        )


def _backend(
    settings: Settings,
    metrics: Metrics | None,
    upload_tokens: UploadTokens,
    output_files: OutputFiles,
    capacity_changed: Hook,
) -> Backend:
    """Where instances run: this machine, or a Ray cluster (``COGPORT_BACKEND=ray``)."""
    if settings.backend == "ray":
        from cogport.backends.raycluster import RayBackend  # needs the cluster extra

        return RayBackend(settings, file_sink=output_files, on_capacity=capacity_changed)
    return LocalBackend(
        settings,
        upload_url=file_urls.upload_url(settings, upload_tokens.issue("local")),
        file_sink=output_files,
        on_capacity=capacity_changed,
        node=socket.gethostname(),
        on_ready=metrics.instance_ready if metrics is not None else None,
    )


def _announce(
    transitions: Transitions, hub: Hub, announcer: WebhookAnnouncer, notifier: Notifier, metrics: Metrics | None
) -> None:
    """Every announcement of a change goes through these, registered once (see lifecycle/status.py)."""
    transitions.within(announcer.within)
    transitions.after_commit(hub_hook(hub))
    transitions.after_commit(announcer.after_commit)
    if notifier.enabled:
        transitions.after_commit(notifier.after_commit)
    if metrics is not None:
        transitions.after_commit(metrics.after_commit)  # the run counters (cogport/metrics)
        announcer.on_outcome = metrics.webhook_outcome
