"""Version bundles: what a node needs, in storage, to run a version it did not build.

When a push succeeds the builder stores, once per version (versions are immutable: written once, never
replaced):

* ``bundles/<version id>/source.tar.gz``: the published source directory as the model sees it, its
  ``.cog/openapi_schema.json`` included (``__pycache__`` left out);
* ``bundles/<version id>/manifest.json``: the environment facts (:class:`Manifest`): the Python the venv
  was built with, the cog/coglet version, cog.yaml's packages, requirements file, build commands and
  environment, and a frozen lock of the venv as built (``uv pip freeze``), so a node installs exactly the
  same distributions. It is written after the archive: a manifest means a complete bundle.

:mod:`cogport.build.prepare` turns a bundle back into a source directory and a venv on a node.
Versions made before bundles existed get theirs on first need (:func:`ensure`), from the host that
holds their files.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cogport.build import packing
from cogport.build.builder import DEFAULT_PYTHON, sdk_version
from cogport.build.environment import COMPLETE_MARKER, Environments
from cogport.build.errors import BuildError, BundleMissing, PrepareFailed
from cogport.core.jobs import VersionSpec
from cogport.errors import FileNotFound
from cogport.settings import Settings
from cogport.storage.base import Storage

FORMAT = 1
PREFIX = "bundles"
_CHUNK = 1 << 20


def prefix(version_id: str) -> str:
    """Everything stored for one version's bundle (what to delete with the version)."""
    return f"{PREFIX}/{version_id}"


def bundle_key(version_id: str) -> str:
    """The archive of a version's source directory."""
    return f"{prefix(version_id)}/source.tar.gz"


def manifest_key(bundle: str) -> str:
    """The manifest stored next to the archive ``bundle``."""
    return f"{bundle.rsplit('/', 1)[0]}/manifest.json"


@dataclass(frozen=True)
class Manifest:
    """The facts a node needs to rebuild a version's environment (``manifest.json``)."""

    version_id: str
    python_version: str
    """The interpreter the venv was built with (``3.11.7``); a node takes the same, else the same minor."""
    python_wanted: str
    """cog.yaml's ``build.python_version`` (or the default used for it)."""
    sdk_version: str
    lock: str
    """``uv pip freeze`` of the venv as built: every distribution, pinned (cog and coglet included)."""
    packages: tuple[str, ...] = ()
    requirements: str | None = None
    pre_install: tuple[str, ...] = ()
    run: tuple[str, ...] = ()
    build_env: dict[str, str] = field(default_factory=dict)
    environment_key: str = ""
    """The venv's key on the host that built it (for reading logs; nodes compute their own)."""
    format: int = FORMAT

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Manifest:
        try:
            raw: dict[str, Any] = json.loads(data)
            if raw.get("format") != FORMAT:
                raise PrepareFailed(
                    f"the bundle manifest {where} has format {raw.get('format')!r}; this server reads format {FORMAT}"
                )
            return cls(
                version_id=str(raw["version_id"]),
                python_version=str(raw["python_version"]),
                python_wanted=str(raw["python_wanted"]),
                sdk_version=str(raw["sdk_version"]),
                lock=str(raw["lock"]),
                packages=tuple(str(p) for p in raw.get("packages", ())),
                requirements=raw.get("requirements"),
                pre_install=tuple(str(c) for c in raw.get("pre_install", ())),
                run=tuple(str(c) for c in raw.get("run", ())),
                build_env={str(k): str(v) for k, v in raw.get("build_env", {}).items()},
                environment_key=str(raw.get("environment_key", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PrepareFailed(f"the bundle manifest {where} is not readable: {exc}") from None


async def store(
    storage: Storage, version_id: str, source: Path, venv: Path, environments: Environments, settings: Settings
) -> str:
    """Store the bundle of a built version (unless it is there already); returns its key."""
    key = bundle_key(version_id)
    if await storage.exists(manifest_key(key)):
        return key
    manifest = await _manifest(version_id, source, venv, environments, settings)
    with tempfile.TemporaryFile(prefix="cogport-bundle-") as archive:
        await asyncio.to_thread(_pack, source, archive)
        archive.seek(0)
        await storage.put_stream(key, _read_chunks(archive))
    await storage.put(manifest_key(key), manifest.to_json())
    return key


async def ensure(storage: Storage, spec: VersionSpec, environments: Environments, settings: Settings) -> str:
    """The bundle key of ``spec``'s version, storing the bundle first when it has none (versions built
    before bundles, trained versions) and this host holds its files. Raises :class:`BundleMissing` when
    neither storage nor this host has them."""
    key = spec.bundle_key or bundle_key(spec.version_id)
    if await storage.exists(manifest_key(key)):
        return key
    source, venv = Path(spec.source_path), Path(spec.venv_path)
    here = bool(spec.source_path and spec.venv_path) and await asyncio.to_thread(_built_here, source, venv)
    if not here:
        raise BundleMissing(
            f"version {spec.version_id} has no bundle in storage, and its files are not on this host, so no "
            "other node can run it. Push the model again to make a version that has one."
        )
    return await store(storage, spec.version_id, source, venv, environments, settings)


async def read_manifest(storage: Storage, bundle: str) -> Manifest:
    key = manifest_key(bundle)
    try:
        data = await storage.get(key)
    except FileNotFound:
        raise BundleMissing(
            f"storage holds no bundle {bundle} (no {key}): the version was built before bundles, or its bundle "
            "was deleted. Push the model again, or run it where it was built."
        ) from None
    return Manifest.from_json(data, key)


async def _manifest(
    version_id: str, source: Path, venv: Path, environments: Environments, settings: Settings
) -> Manifest:
    from cogport.build import cogyaml  # here, not at the top: PyYAML is not imported at the server's start

    config = cogyaml.parse((source / "cog.yaml").read_text(encoding="utf-8", errors="replace"))
    return Manifest(
        version_id=version_id,
        python_version=_venv_python(venv),
        python_wanted=config.build.python_version or DEFAULT_PYTHON,
        sdk_version=sdk_version(config, settings),
        lock=await environments.freeze(venv),
        packages=config.build.python_packages,
        requirements=config.build.python_requirements,
        pre_install=config.build.pre_install,
        run=config.build.run,
        build_env=dict(config.environment),
        environment_key=venv.name,
    )


def _built_here(source: Path, venv: Path) -> bool:
    return (source / "cog.yaml").is_file() and (venv / COMPLETE_MARKER).is_file()


def _venv_python(venv: Path) -> str:
    """The Python version a venv was built with: from its completion marker, else ``pyvenv.cfg``."""
    try:
        return str(json.loads((venv / COMPLETE_MARKER).read_text())["python"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            name, _, value = line.partition("=")
            if name.strip() in ("version_info", "version"):
                return value.strip()
    except OSError:
        pass
    raise BuildError(f"cannot tell which Python the environment {venv} was built with")


def source_files(source: Path) -> list[str]:
    """Every file of a published source directory (``.cog/`` included), minus Python's bytecode caches."""
    files = []
    for directory, dirnames, filenames in os.walk(source):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel_dir = Path(directory).relative_to(source)
        for name in filenames:
            if (Path(directory) / name).is_file():  # a dangling link is nothing the model can read
                files.append((rel_dir / name).as_posix())
    return sorted(files)


def _pack(source: Path, out: BinaryIO) -> None:
    packing.pack(source, source_files(source), out)


async def _read_chunks(handle: BinaryIO) -> AsyncIterator[bytes]:
    while chunk := await asyncio.to_thread(handle.read, _CHUNK):
        yield chunk
