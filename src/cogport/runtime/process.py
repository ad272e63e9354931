"""The coglet server process of one instance: how it is launched, watched and killed.

Launch rules (see ``/work/shared/notes/cog-runtime.md``):

* cwd is the version's source directory: coglet resolves the predictor ref and reads
  ``.cog/openapi_schema.json`` relative to it.
* ``PATH`` starts with ``<venv>/bin``: coglet spawns its worker as a bare ``python`` looked up on
  PATH; without the venv first it fails to import coglet and stays STARTING forever.
* A process group of its own (``start_new_session``) so the worker, and anything the model spawns,
  is killed together; a private ``TMPDIR`` so the model's temp files go away with the instance.
* stdout and stderr are one pipe, read continuously (a full pipe would block coglet) into a
  :class:`~cogport.runtime.logs.LogTail`.
* cogport's own ``COGPORT_*`` settings (secrets among them) and stray ``COG_*`` variables are not
  passed to the model.
* With a :class:`~cogport.runtime.sandbox.Sandbox` (the default), the server runs under bubblewrap
  with a :class:`Boundary`: it gets only the locale/TZ/PATH part of cogport's environment, a private
  size-capped ``/tmp``, a network namespace of its own (cogport reaches coglet through the unix socket
  ``<rundir>/coglet.sock``; egress and cogport's own URL go through a per-instance
  :class:`~cogport.runtime.gateway.Gateway`) and a cgroup with the limits of its hardware SKU. coglet's
  ``/tmp/coglet/predictions`` is reached from the host through ``/proc/<pid>/root``.
* Trained weights: sandboxed, ``COG_WEIGHTS`` is a URL, as on Replicate (``http://<internal>/internal/weights/
  <name>``, which the instance's gateway serves from the host's copy), so that ``requests.get(weights)`` in
  ``setup`` works; without the sandbox it stays the local path (there is no gateway to serve it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cogport.core.jobs import VersionSpec
from cogport.runtime import procfs
from cogport.runtime.gateway import SANDBOX_UPLOADS, EgressPolicy, Gateway
from cogport.runtime.limits import Cgroup, cgroup_name, confine
from cogport.runtime.logs import LogTail
from cogport.runtime.sandbox import COGLET_PORT, EGRESS_PORT, Forward, Sandbox, safe_base_environment
from cogport.runtime.sweeper import PREDICTION_DIRS
from cogport.settings import SandboxLimits

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
STREAM_LIMIT = 1 << 20
"""Longest log line read as one line; longer ones are dropped."""


def coglet_environment(
    spec: VersionSpec,
    *,
    port: int,
    tmpdir: str,
    setup_timeout: float,
    base: Mapping[str, str],
    gpus: tuple[int, ...] = (),
) -> dict[str, str]:
    """The environment of a coglet server for ``spec`` listening on ``port``, seeing only ``gpus``."""
    env = {k: v for k, v in base.items() if not k.startswith(("COGPORT_", "COG_", "PYTHONHOME", "PYTHONPATH"))}
    env.update(spec.environment)
    venv_bin = os.path.join(spec.venv_path, "bin")
    env["PATH"] = f"{venv_bin}{os.pathsep}{env['PATH']}" if env.get("PATH") else venv_bin
    env["VIRTUAL_ENV"] = spec.venv_path
    env["PORT"] = str(port)
    env["TMPDIR"] = tmpdir
    env["PYTHONUNBUFFERED"] = "1"
    env["COG_MAX_CONCURRENCY"] = str(max(1, spec.concurrency))
    env["COG_SETUP_TIMEOUT"] = str(max(1, round(setup_timeout)))
    env["COG_PREDICT_TYPE_STUB" if spec.mode == "predict" else "COG_TRAIN_TYPE_STUB"] = spec.ref
    if spec.weights:
        env["COG_WEIGHTS"] = spec.weights
    # Its own GPUs only (none for a CPU instance): never two instances on one GPU.
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index) for index in gpus)
    return env


@dataclass(frozen=True)
class Boundary:
    """What a sandboxed instance may reach and use (``COGPORT_SANDBOX__*``)."""

    egress: EgressPolicy = field(default_factory=lambda: EgressPolicy.parse("public"))
    internal_base: str = "http://127.0.0.1:8000"
    """cogport's internal URL: inside the sandbox, the per-instance gateway answers there."""
    upload_max_bytes: int = 1 << 30
    storage: tuple[str, int] | None = None
    """The storage endpoint (host, port) presigned input URLs name: on loopback, it answers inside the
    sandbox at the same address (relayed to it and nowhere else); elsewhere, the egress proxy admits it."""
    limits: Callable[[str], SandboxLimits] = lambda hardware: SandboxLimits()
    """The limits of an instance on a hardware SKU."""


def _loopback(host: str) -> bool:
    return host.strip("[]").lower() in ("127.0.0.1", "localhost", "::1")


def _inside_ports(internal_port: int) -> tuple[int, int]:
    """coglet's and the egress proxy's ports inside a sandbox, clear of cogport's own port there."""
    coglet = COGLET_PORT if internal_port != COGLET_PORT else COGLET_PORT + 1
    egress = EGRESS_PORT if internal_port != EGRESS_PORT else EGRESS_PORT + 1
    return coglet, egress


def coglet_command(spec: VersionSpec, *, upload_url: str | None) -> list[str]:
    command = [os.path.join(spec.venv_path, "bin", "python"), "-m", "cog.server.http", "--host", "127.0.0.1"]
    if spec.mode == "train":
        command += ["--x-mode", "train"]
    if upload_url:
        command += ["--upload-url", upload_url]
    return command


@functools.cache
def _prctl() -> Any:
    """libc's ``prctl``, looked up in the parent: between fork and exec (where the runtime's worker
    threads may hold the loader's lock) ``_die_with_parent`` must not ``dlopen`` anything."""
    return ctypes.CDLL(None, use_errno=True).prctl


def _die_with_parent() -> None:
    """In the child, before exec: have the kernel SIGKILL the coglet server if cogport dies (even by
    ``kill -9``), so no orphan keeps its port and memory. Its worker dies with the server.

    The signal follows the death of the *thread* that forked, so instances must be spawned from the
    thread running the event loop for the pool's whole life (they are)."""
    _prctl()(PR_SET_PDEATHSIG, signal.SIGKILL)


_LINUX = sys.platform == "linux"


def _preexec(cgroup: Cgroup | None, limits: SandboxLimits) -> Callable[[], None] | None:
    """In the child before exec: die with cogport, join the instance's cgroup, take its rlimits."""
    if not _LINUX:
        return None
    confined = confine(cgroup, limits)

    def run() -> None:
        _die_with_parent()
        confined()

    return run


async def _exec(
    command: list[str],
    cwd: str,
    env: Mapping[str, str],
    preexec: Callable[[], None] | None,
    pass_fds: tuple[int, ...],
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=preexec,
        pass_fds=pass_fds,
        limit=STREAM_LIMIT,
    )


def _local_files(weights: str | None) -> list[Path]:
    """The weights, when they are a file on this machine (bound read-only into the sandbox)."""
    if weights and os.path.isabs(weights) and os.path.exists(weights):
        return [Path(weights)]
    return []


class CogletProcess:
    """A running coglet server and its process group. Create with :meth:`spawn`."""

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        tmpdir: str,
        logs: LogTail,
        prediction_dirs: Path | None = PREDICTION_DIRS,
        *,
        uds: str | None = None,
        gateway: Gateway | None = None,
        cgroup: Cgroup | None = None,
    ) -> None:
        self._process = process
        self.pid = process.pid
        self.pgid = process.pid  # start_new_session: the server (or bwrap) leads its own group
        self.tmpdir = tmpdir
        """The instance's directory on the host: its temp dir, or (sandboxed) where its sockets are."""
        self._prediction_dirs = prediction_dirs
        self.uds = uds
        """The unix socket cogport reaches coglet at (sandboxed), else None (loopback TCP)."""
        self.gateway = gateway
        self.cgroup = cgroup
        self.logs = logs
        assert process.stdout is not None
        self._reader = asyncio.create_task(self._read(process.stdout), name=f"coglet-log-{logs.name}")

    @property
    def prediction_dirs(self) -> Path | None:
        """Where coglet's ``/tmp/coglet/predictions`` is on the host (sandboxed: through the ``/proc``
        root of a process inside), or None when it cannot be reached now."""
        if self._prediction_dirs is not None:
            return self._prediction_dirs
        for info in procfs.group_processes(self.pgid):  # a scan of /proc: once, then kept
            if info.ppid == self.pid:  # bwrap's child: pid 1 of the sandbox, for the sandbox's whole life
                self._prediction_dirs = Path(f"/proc/{info.pid}/root") / PREDICTION_DIRS.relative_to("/")
                return self._prediction_dirs
        return None

    def limit_crossed(self) -> str | None:
        """The limit the model crossed ("ran out of memory: limit 8 GiB"), if one killed it."""
        return self.cgroup.violation() if self.cgroup is not None else None

    @classmethod
    async def spawn(
        cls,
        spec: VersionSpec,
        *,
        name: str,
        port: int,
        setup_timeout: float,
        upload_url: str | None = None,
        gpus: tuple[int, ...] = (),
        sandbox: Sandbox | None = None,
        boundary: Boundary | None = None,
    ) -> CogletProcess:
        if _LINUX:
            _prctl()  # resolved here, in the parent (see _die_with_parent)
        if sandbox is not None:
            return await cls._spawn_sandboxed(
                spec,
                name=name,
                setup_timeout=setup_timeout,
                upload_url=upload_url,
                gpus=gpus,
                sandbox=sandbox,
                boundary=boundary or Boundary(),
            )
        tmpdir = tempfile.mkdtemp(prefix=f"cogport-{name}-")
        env = coglet_environment(
            spec, port=port, tmpdir=tmpdir, setup_timeout=setup_timeout, base=os.environ, gpus=gpus
        )
        command = coglet_command(spec, upload_url=upload_url)
        try:
            process = await _exec(command, spec.source_path, env, _die_with_parent if _LINUX else None, ())
        except BaseException:
            shutil.rmtree(tmpdir, ignore_errors=True)
            raise
        return cls(process, tmpdir, LogTail(name), PREDICTION_DIRS)

    @classmethod
    async def _spawn_sandboxed(
        cls,
        spec: VersionSpec,
        *,
        name: str,
        setup_timeout: float,
        upload_url: str | None,
        gpus: tuple[int, ...],
        sandbox: Sandbox,
        boundary: Boundary,
    ) -> CogletProcess:
        rundir = tempfile.mkdtemp(prefix=f"cogport-{name}-")
        parts = urlsplit(boundary.internal_base)
        internal_host, internal_port = parts.hostname or "127.0.0.1", parts.port or 80
        coglet_port, egress_port = _inside_ports(internal_port)
        logs = LogTail(name)
        gateway = Gateway(
            Path(rundir),
            boundary.egress,
            boundary.internal_base,
            upload_url=upload_url,
            upload_max_bytes=boundary.upload_max_bytes,
            on_refusal=logs.add,
            storage=boundary.storage if boundary.storage and _loopback(boundary.storage[0]) else None,
            weights=next(iter(_local_files(spec.weights)), None),
        )
        limits = boundary.limits(spec.hardware)
        cgroup: Cgroup | None = None
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            uds = os.path.join(rundir, "coglet.sock")
            listener.bind(uds)
            listener.listen(256)
            await gateway.start()
            inside_host = "::1" if internal_host in ("::1", "[::1]") else "127.0.0.1"
            forwards = [
                Forward("127.0.0.1", egress_port, gateway.egress_socket),
                Forward(inside_host, internal_port, gateway.gateway_socket),
            ]
            if gateway.storage is not None and gateway.storage[1] not in (internal_port, egress_port, coglet_port):
                storage_host = "::1" if ":" in gateway.storage[0] else "127.0.0.1"
                forwards.append(Forward(storage_host, gateway.storage[1], gateway.storage_socket))
            inside_upload = f"{parts.scheme}://{parts.netloc}{SANDBOX_UPLOADS}" if upload_url else None
            env = coglet_environment(
                spec,
                port=coglet_port,
                tmpdir="/tmp",
                setup_timeout=setup_timeout,
                base=safe_base_environment(os.environ),
                gpus=gpus,
            )
            if gateway.weights_path is not None:  # a URL, as on Replicate (see the module docstring)
                env["COG_WEIGHTS"] = f"{parts.scheme}://{parts.netloc}{gateway.weights_path}"
            env = sandbox.environment(env, egress=True, egress_port=egress_port)
            launch = sandbox.command(
                coglet_command(spec, upload_url=inside_upload),
                venv=Path(spec.venv_path),
                source=Path(spec.source_path),
                tenant=spec.tenant,
                gpus=bool(gpus),
                listen=listener,
                listen_port=coglet_port,
                forwards=forwards,
                limits=limits,
            )
            cgroup = await asyncio.to_thread(Cgroup.create, cgroup_name(os.path.basename(rundir)), limits)
            preexec = _preexec(cgroup, limits)
            try:
                process = await _exec(launch.argv, spec.source_path, env, preexec, launch.pass_fds)
            finally:
                launch.close()
                if cgroup is not None:
                    cgroup.close_attach()
        except BaseException:
            await gateway.close()
            if cgroup is not None:
                await asyncio.to_thread(cgroup.remove)
            shutil.rmtree(rundir, ignore_errors=True)
            raise
        finally:
            listener.close()
        return cls(process, rundir, logs, None, uds=uds, gateway=gateway, cgroup=cgroup)

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def wait(self) -> int:
        """Wait for the server to exit; its exit code (minus the signal when killed by one)."""
        return await self._process.wait()

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while True:
            try:
                raw = await stream.readline()
            except ValueError:  # a line over STREAM_LIMIT: readline dropped it
                continue
            if not raw:
                return
            self.logs.add(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def worker_exit_code(self) -> int | None:
        """The exit code of a crashed worker still waiting to be reaped (coglet leaves it a zombie)."""
        for info in procfs.group_processes(self.pgid):
            if info.pid != self.pid and info.state == "Z":
                return info.exit_code
        return None

    def rss_bytes(self) -> int:
        return procfs.group_rss_bytes(self.pgid)

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    async def terminate(self, grace: float) -> None:
        """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL it; always removes the temp dir.

        The group is killed even when the server already exited: a worker stuck in ``setup()``
        outlives coglet's own setup timeout, and models may leave children behind.
        """
        try:
            if self.returncode is None:
                self.signal_group(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wait(), grace)
            self.signal_group(signal.SIGKILL)
            await self.wait()
            await self._reap_group()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reader, 5)
        finally:
            if not self._reader.done():
                self._reader.cancel()
            if self.gateway is not None:
                await self.gateway.close()
            if self.cgroup is not None:
                await asyncio.to_thread(self.cgroup.remove)
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    async def _reap_group(self) -> None:
        """Wait (briefly) until no live member of the group is left; orphans are reaped by init."""
        for _ in range(100):
            if not any(p.state != "Z" for p in procfs.group_processes(self.pgid)):
                return
            self.signal_group(signal.SIGKILL)
            await asyncio.sleep(0.02)
        log.warning("process group %d of %s still has members after SIGKILL", self.pgid, self.logs.name)
