"""Runs queued builds in the background and turns the successful ones into versions.

Builds are claimed from the database with a lease that is renewed (with the log) while the build runs,
so a push survives a restart: a build left ``processing`` by a dead process is queued again once its
lease runs out, and one this process stops on shutdown goes straight back to the queue.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cogport.build import bundles
from cogport.build.builder import ModelBuilder, final_source_path, publish_source
from cogport.build.environment import COMPLETE_MARKER
from cogport.build.errors import BuildError
from cogport.build.log import BuildLog
from cogport.db.engine import Database
from cogport.db.tables import Model
from cogport.errors import Conflict
from cogport.ops import builds, versions
from cogport.services.base import Service
from cogport.settings import Settings
from cogport.storage.base import Storage

log = logging.getLogger(__name__)

_VERSION_FIELDS = (
    "cog_version",
    "openapi_schema",
    "python_version",
    "predict_ref",
    "train_ref",
    "concurrency",
    "environment",
    "gpu",
    "source_path",
    "venv_path",
)


@dataclass
class _Job:
    build_id: str
    model_id: int
    version_id: str
    content_id: str
    staging: Path
    log: BuildLog
    lost: bool = False


def _built_by(venv: str | None) -> int | None:
    """The model whose own code ran while ``venv`` was built (its completion marker says), else None: a venv
    of wheels alone, which any model may share."""
    try:
        marker = json.loads((Path(venv or "") / COMPLETE_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    model = marker.get("model") if isinstance(marker, dict) else None
    return model if isinstance(model, int) else None


def _both_dirs(*paths: str | None) -> bool:
    return all(path and Path(path).is_dir() for path in paths)


class Builder(Service):
    name = "builder"
    interval = 5.0
    lease_seconds = 30.0
    save_interval = 0.25
    renew_interval = 10.0

    def __init__(self, database: Database, settings: Settings, storage: Storage) -> None:
        super().__init__()
        self.database = database
        self.settings = settings
        self.storage = storage
        self.model_builder = ModelBuilder(settings)
        self._running: dict[str, asyncio.Task[None]] = {}

    async def run_once(self) -> bool:
        async with self.database.session() as session:
            requeued = await builds.requeue_expired(session)
        for build_id in requeued:
            log.warning("build %s lost its runner; queued again (or failed after repeated interruptions)", build_id)
        while len(self._running) < self.settings.build.concurrency:
            async with self.database.session() as session:
                build = await builds.claim_next(session, self.lease_seconds)
            if build is None:
                break
            version_id = build.version_id or ""
            job = _Job(
                build.id,
                build.model_id,
                version_id,
                build.content_id or version_id,  # a build queued before content ids: they were one
                Path(build.source_path or ""),
                BuildLog(build.logs),
            )
            task = asyncio.create_task(self._run(job), name=f"cogport-build-{build.id}")
            self._running[build.id] = task
            task.add_done_callback(functools.partial(self._finished, build.id))
        return False

    def _finished(self, build_id: str, _task: asyncio.Task[None]) -> None:
        self._running.pop(build_id, None)
        self.wake()

    async def stop(self) -> None:
        await super().stop()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, job: _Job) -> None:
        saver = asyncio.create_task(self._save_loop(job, asyncio.current_task()))
        try:
            try:
                async with asyncio.timeout(self.settings.build.timeout):
                    fields = await self._build(job)
            except TimeoutError:
                raise BuildError(f"the build took longer than {self.settings.build.timeout:.0f}s") from None
            saver.cancel()
            await self._succeed(job, fields)
        except BuildError as exc:
            saver.cancel()
            job.log.line(f"error: {exc.message}")
            await self._fail(job, exc.message)
        except asyncio.CancelledError:
            saver.cancel()
            if job.lost:
                log.warning("build %s was taken over by another process; stopped here", job.build_id)
                return
            async with self.database.session() as session:
                await builds.release(session, job.build_id, job.log.text)
            raise
        except Exception as exc:
            saver.cancel()
            log.exception("build %s failed", job.build_id)
            job.log.line(f"internal error: {type(exc).__name__}: {exc}")
            await self._fail(job, f"internal error while building: {type(exc).__name__}: {exc}")

    async def _build(self, job: _Job) -> dict[str, Any]:
        final = final_source_path(self.settings, job.content_id)
        async with self.database.session() as session:
            built = await builds.built_version(session, str(final))
            reuse = {name: getattr(built, name) for name in _VERSION_FIELDS} if built is not None else None
        if (
            reuse is not None
            and await asyncio.to_thread(_both_dirs, reuse["source_path"], reuse["venv_path"])
            and _built_by(reuse["venv_path"]) in (None, job.model_id)
        ):
            job.log.step("These files are already built (for another model); reusing that build")
            fields = reuse
        else:
            job.log.step(f"Building version {job.version_id}")
            fields = await self.model_builder.build(job.staging, job.log, tenant=job.model_id)
            if _built_by(fields["venv_path"]) is not None:
                # The model's own code ran in its build (a package built from source, build.run): its files
                # and venv are its own, never shared with another model that pushes the same bytes.
                final = final_source_path(self.settings, f"{job.content_id}-m{job.model_id}")
            fields["source_path"] = str(await asyncio.to_thread(publish_source, job.staging, final))
        await self._store_bundle(job, Path(fields["source_path"]), Path(fields["venv_path"]))
        return fields

    async def _store_bundle(self, job: _Job, source: Path, venv: Path) -> None:
        """What another node needs to run the version (:mod:`cogport.build.bundles`), before it exists."""
        job.log.step("Storing the version's bundle (its files and a lock of its environment)")
        try:
            await bundles.store(
                self.storage, job.version_id, source, venv, self.model_builder.environments, self.settings
            )
        except BuildError:
            raise
        except Exception as exc:
            raise BuildError(f"storing the version's bundle failed: {type(exc).__name__}: {exc}") from exc

    async def _succeed(self, job: _Job, fields: dict[str, Any]) -> None:
        async with self.database.session() as session:
            model = await session.get(Model, job.model_id)
            if model is None:
                raise BuildError("the model was deleted while its version was building")
            try:
                _, created = await versions.create(session, model, job.version_id, **fields)
            except Conflict as exc:
                raise BuildError(exc.detail) from None
            job.log.step(f"Version {job.version_id} is ready" + ("" if created else " (it already existed)"))
            await builds.finish(
                session,
                job.build_id,
                status=builds.SUCCEEDED,
                logs=job.log.text,
                source_path=str(fields["source_path"]),
            )
        await self._clean(job)

    async def _fail(self, job: _Job, message: str) -> None:
        async with self.database.session() as session:
            await builds.finish(session, job.build_id, status=builds.FAILED, logs=job.log.text, error=message)
        await self._clean(job)

    async def _clean(self, job: _Job) -> None:
        """Remove the staging area (whatever :func:`publish_source` did not move away)."""
        staging_root = (self.settings.data_dir / "builds").resolve()
        area = job.staging.parent.resolve()
        if area.parent == staging_root:
            await asyncio.to_thread(shutil.rmtree, area, True)

    async def _save_loop(self, job: _Job, runner: asyncio.Task[Any] | None) -> None:
        """Save the log as it grows and renew the lease; stop the build if another process took it."""
        saved_version = -1
        renewed_at = 0.0
        while True:
            await asyncio.sleep(self.save_interval)
            now = time.monotonic()
            if job.log.version == saved_version and now - renewed_at < self.renew_interval:
                continue
            saved_version = job.log.version
            renewed_at = now
            try:
                async with self.database.session() as session:
                    ours = await builds.renew(session, job.build_id, job.log.text, self.lease_seconds)
            except Exception:
                log.exception("saving the log of build %s failed", job.build_id)
                continue
            if not ours and runner is not None:
                job.lost = True
                runner.cancel()
                return
