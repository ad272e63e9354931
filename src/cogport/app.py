"""The app factory. Its lifespan owns every resource: database, storage, services."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cogport import bootstrap, hardware
from cogport.api import problems
from cogport.api.routes import account, admin, collections, file_outputs, files, models, search, versions, webhooks
from cogport.api.routes import hardware as hardware_routes
from cogport.db.engine import Database
from cogport.files.signing import signing_key
from cogport.files.tokens import UploadTokens
from cogport.services.base import Services
from cogport.services.janitor import Janitor
from cogport.services.retention import RetentionService
from cogport.settings import Settings
from cogport.storage.local import LocalStorage

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings)
        await database.migrate()
        token = await bootstrap.ensure_admin(database, settings)
        if token is not None:
            bootstrap.announce_admin_token(token, settings.admin_username)
        storage = LocalStorage(settings.data_dir / "files")
        services = Services()
        services.add(Janitor(database, storage))
        services.add(RetentionService(database, storage, settings))
        app.state.database = database
        app.state.storage = storage
        app.state.upload_tokens = UploadTokens(signing_key(settings))
        app.state.services = services
        app.state.hardware = hardware.available(settings)
        services.start()
        try:
            yield
        finally:
            await services.stop()
            await database.dispose()

    app = FastAPI(
        title="cogport",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    problems.install(app)
    routers = (account, hardware_routes, webhooks, collections, models, versions, search, admin, files, file_outputs)
    for module in routers:
        app.include_router(module.router)
    return app
