"""Node-side preparation: a version's bundle (:mod:`.bundles`) in storage → a source dir and a venv here.

Layout under a node's cache directory::

    <cache_dir>/versions/<version id>/src/            the model's files, as published at push time
    <cache_dir>/versions/<version id>/manifest.json   the bundle's manifest
    <cache_dir>/versions/<version id>/prepared.json   the venv it runs in, once that is complete
    <cache_dir>/versions/<version id>.lock            held while the version is prepared
    <cache_dir>/venvs/<environment key>/              shared by versions with the same environment

The bundle is extracted into a temporary directory and renamed into place, so a version directory is
either complete or absent; a file lock makes concurrent preparations of one version (tasks or processes
of one node) download and build once. The venv is built with the API host's machinery
(:class:`~cogport.build.environment.Environments`: uv, offline first, the host's interpreters) from the
manifest's frozen lock, so it holds exactly the distributions of the venv built at push time.

cog.yaml's ``build.run`` / ``build.pre_install`` commands are not run again here: their effect on the
source is in the bundle and the packages they installed are in the lock; anything else they did on the
API host (system changes, other files in the venv) is not reproduced.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from uv import find_uv_bin

from cogport.build import interpreters, packing
from cogport.build.builder import build_boundary
from cogport.build.bundles import Manifest, bundle_key, read_manifest
from cogport.build.environment import COMPLETE_MARKER, Environments, EnvironmentSpec, file_lock
from cogport.build.errors import BuildError, BundleMissing, PrepareFailed
from cogport.build.log import BuildLog
from cogport.core.jobs import VersionSpec
from cogport.errors import FileNotFound
from cogport.settings import Settings
from cogport.storage.base import Storage

_PREPARED = "prepared.json"


@dataclass(frozen=True)
class Prepared:
    """A version ready to run on this node: ``python -m cog.server.http`` from ``venv_path`` in ``source_path``."""

    version_id: str
    source_path: Path
    venv_path: Path
    manifest: Manifest

    def spec(self, spec: VersionSpec) -> VersionSpec:
        """``spec`` with this node's paths in place of the API host's."""
        return replace(spec, source_path=str(self.source_path), venv_path=str(self.venv_path))


def node_environments(cache_dir: Path, settings: Settings) -> Environments:
    """The venvs of a node: under ``<cache_dir>/venvs``, with the build settings' uv cache and limits."""
    return Environments(
        cache_dir / "venvs",
        uv=find_uv_bin(),
        cache_dir=settings.build.uv_cache_dir,
        default_cache_dir=cache_dir / "cache" / "uv",
        timeout=settings.build.timeout,
        prefer_offline=settings.build.prefer_offline,
        boundary=build_boundary(settings),
    )


async def prepare(
    storage: Storage,
    version: VersionSpec | str,
    cache_dir: Path,
    settings: Settings,
    *,
    log: BuildLog | None = None,
) -> Prepared:
    """Make ``version`` (a spec, or a bundle key) runnable on this node; returns its local paths.

    Raises :class:`BundleMissing` when storage has no bundle for it and :class:`PrepareFailed` when the
    bundle is damaged or its environment cannot be built here (the message says why)."""
    log = log or BuildLog()
    key = (version.bundle_key or bundle_key(version.version_id)) if isinstance(version, VersionSpec) else version
    version_id = _version_id(key)
    root = cache_dir / "versions"
    directory = root / version_id
    ready = await asyncio.to_thread(_ready, directory, version_id)
    if ready is not None:
        return ready
    root.mkdir(parents=True, exist_ok=True)
    async with file_lock(root / f"{version_id}.lock"):
        ready = await asyncio.to_thread(_ready, directory, version_id)
        if ready is not None:
            log.step(f"Version {version_id} was prepared meanwhile")
            return ready
        if not (directory / "manifest.json").is_file():
            await _download(storage, key, root, directory, log)
        manifest = Manifest.from_json((directory / "manifest.json").read_bytes(), str(directory / "manifest.json"))
        tenant = version.tenant if isinstance(version, VersionSpec) else None
        venv = await _environment(manifest, directory / "src", cache_dir, settings, log, tenant)
        (directory / _PREPARED).write_text(json.dumps({"venv": str(venv)}))
    return Prepared(version_id, directory / "src", venv, manifest)


def _version_id(key: str) -> str:
    parts = key.split("/")
    if len(parts) != 3 or bundle_key(parts[1]) != key or not parts[1].isalnum():
        raise PrepareFailed(f"{key!r} is not a bundle key (bundles/<version id>/source.tar.gz)")
    return parts[1]


def _ready(directory: Path, version_id: str) -> Prepared | None:
    """The prepared version, when its directory and venv are complete."""
    try:
        venv = Path(json.loads((directory / _PREPARED).read_text())["venv"])
        manifest = Manifest.from_json((directory / "manifest.json").read_bytes(), str(directory))
    except (OSError, ValueError, KeyError, TypeError, PrepareFailed):
        return None
    if not (venv / COMPLETE_MARKER).exists():
        return None
    return Prepared(version_id, directory / "src", venv, manifest)


async def _download(storage: Storage, key: str, root: Path, directory: Path, log: BuildLog) -> None:
    """Fetch and extract the bundle into a temporary directory, then rename it to ``directory``."""
    manifest = await read_manifest(storage, key)
    log.step(f"Downloading the bundle of version {manifest.version_id}")
    partial = root / f".partial-{manifest.version_id}-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        archive = partial / "source.tar.gz"
        size = await _copy_to_file(storage, key, archive)
        log.line(f"  {size} bytes")
        await asyncio.to_thread(_extract, archive, partial / "src", manifest.version_id)
        await asyncio.to_thread(_move_into_place, partial, directory, manifest)
    except BaseException:
        await asyncio.to_thread(shutil.rmtree, partial, True)
        raise


async def _copy_to_file(storage: Storage, key: str, path: Path) -> int:
    size = 0
    try:
        with path.open("wb") as handle:
            async for chunk in storage.open_chunks(key):
                size += len(chunk)
                await asyncio.to_thread(handle.write, chunk)
    except FileNotFound:
        raise BundleMissing(
            f"storage holds the manifest of bundle {key} but not its archive; push the model again"
        ) from None
    return size


def _move_into_place(partial: Path, directory: Path, manifest: Manifest) -> None:
    (partial / "source.tar.gz").unlink()
    (partial / "manifest.json").write_bytes(manifest.to_json())
    if directory.exists():  # left by a preparation that died before writing its manifest
        shutil.rmtree(directory)
    os.rename(partial, directory)


def _extract(archive: Path, dest: Path, version_id: str) -> None:
    try:
        with archive.open("rb") as handle:
            # A bound on what one bundle may unpack to; bundles are made by cogport, this is only a guard.
            packing.unpack(handle, dest, max_bytes=1 << 42, max_files=1_000_000)
    except BuildError as exc:
        raise PrepareFailed(f"the bundle of version {version_id} is damaged: {exc.message}") from None


async def _environment(
    manifest: Manifest, source: Path, cache_dir: Path, settings: Settings, log: BuildLog, tenant: int | None
) -> Path:
    environments = node_environments(cache_dir, settings)
    try:
        interpreter, warning = await asyncio.to_thread(
            interpreters.find, manifest.python_version, settings.build.python_search_paths, environments.uv
        )
        if warning:
            log.line(f"  warning: {warning} (version {manifest.version_id} was built with {manifest.python_version})")
        if manifest.pre_install or manifest.run:
            log.line("  warning: cog.yaml's build commands are not run again on this node (see cogport.build.prepare)")
        spec = EnvironmentSpec(
            interpreter=interpreter,
            sdk_version=manifest.sdk_version,
            build_env=manifest.build_env,
            lock=manifest.lock,
        )
        return await environments.ensure(spec, source, log, allow_commands=False, tenant=tenant)
    except PrepareFailed:
        raise
    except BuildError as exc:
        raise PrepareFailed(
            f"the environment of version {manifest.version_id} cannot be built on this node: {exc.message}"
        ) from None
