"""Registers the example models (``examples/<name>``, public) on start, in the background and idempotently."""

from __future__ import annotations

import asyncio
import io
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from cogport.build import packing
from cogport.build.builder import stage
from cogport.db.engine import Database
from cogport.errors import VersionNotFound
from cogport.identifiers import new_object_id
from cogport.ops import builds, examples, versions
from cogport.services.base import Service
from cogport.settings import Settings

log = logging.getLogger(__name__)


def default_examples_dir() -> Path:
    """Where the example models are: ``cogport/examples`` in an installed wheel (the build copies the
    checkout's ``examples/`` there, see pyproject.toml), else ``examples/`` at the top of the source checkout
    this package runs from (``src/cogport/services`` is three levels below)."""
    here = Path(__file__).resolve()
    installed = here.parents[1] / "examples"
    return installed if installed.is_dir() else here.parents[3] / "examples"


class ExampleRegistrar(Service):
    name = "examples"
    interval = 3600.0

    def __init__(self, database: Database, settings: Settings, on_queued: Callable[[], None]) -> None:
        super().__init__()
        self.database = database
        self.settings = settings
        self.on_queued = on_queued
        self.done = False

    async def run_once(self) -> bool:
        if self.done:
            return False
        root = self.settings.build.examples_dir or default_examples_dir()
        for name in self.settings.build.examples:
            directory = root / name
            if not (directory / "cog.yaml").is_file():
                log.warning("example %s not found at %s; not registered", name, directory)
                continue
            for attempt in (1, 2):
                try:
                    await self.register(name, directory)
                    break
                except IntegrityError:  # another process registered it at the same moment
                    if attempt == 2:
                        raise
        self.done = True
        return False

    async def register(self, name: str, directory: Path) -> None:
        area = self.settings.data_dir / "builds" / new_object_id()
        archive = await asyncio.to_thread(packing.pack_bytes, directory, packing.model_files(directory))
        staged = await asyncio.to_thread(stage, io.BytesIO(archive), area / "src", self.settings)
        queued = False
        try:
            async with self.database.session() as session:
                owner = await examples.ensure_account(session)
                model = await examples.ensure_model(session, owner, name, _description(directory))
                if staged.error is not None:
                    log.error("example %s cannot be built: %s", name, staged.error)
                    return
                version_id = staged.version_id(model.id, f"{owner.username}/{model.name}")
                try:
                    await versions.get(session, model, version_id)
                    return
                except VersionNotFound:
                    pass
                if await examples.build_pending(session, model, version_id):
                    return
                await builds.create(
                    session,
                    model,
                    owner.id,
                    version_id=version_id,
                    content_id=staged.content_id,
                    source_path=str(staged.source),
                )
                queued = True
                log.info("queued the build of example %s/%s", owner.username, name)
        finally:
            if not queued:
                await asyncio.to_thread(shutil.rmtree, area, True)
        self.on_queued()


def _description(directory: Path) -> str | None:
    readme = directory / "README.md"
    if not readme.is_file():
        return None
    for line in readme.read_text(encoding="utf-8", errors="replace").splitlines():
        text = line.strip().lstrip("#").strip()
        if text:
            return text[:300]
    return None
