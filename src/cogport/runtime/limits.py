"""Per-instance resource limits: a cgroup per instance, rlimits, and a size-capped ``/tmp``.

Layout of the instance cgroups (one directory per instance, named after it):

* cgroup v2 (the unified hierarchy at ``/sys/fs/cgroup``, or at ``/sys/fs/cgroup/unified`` on a hybrid
  host when that hierarchy offers the ``memory`` and ``pids`` controllers):
  ``<base>/cogport/<name>``, where ``<base>`` is the first of the server's own cgroup, its parent, ...,
  the root whose ``cgroup.subtree_control`` accepts ``+memory +pids``. A v2 cgroup with controllers
  enabled for its children may hold no processes itself, and the server's own cgroup holds the server,
  so in practice ``<base>`` is the parent of the server's cgroup (``cogport`` is then a sibling of it),
  or the root when the server lives there. ``cpu`` is enabled too where it can be (best effort).
* cgroup v1 (one hierarchy per controller at ``/sys/fs/cgroup/<controller>``): for each of ``memory``,
  ``pids`` and (when ``cpus`` is set) ``cpu``, ``<the server's cgroup in it>/cogport/<name>``, falling
  back to ``<controller root>/cogport/<name>`` when the server's cgroup is not visible in this mount (a
  container without a cgroup namespace) or refuses a child.

Processes join the cgroup before they exec: :meth:`Cgroup.prepare_attach` opens the ``cgroup.procs``
files in the parent and returns a ``preexec_fn`` that writes ``0`` ("the writing process") to each.
Counters (``oom_kill``, ``pids.events``) are read relative to their value at :meth:`Cgroup.create`,
so a directory reused from a crashed run does not report its old events.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import resource
import signal
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

from cogport.settings import SandboxLimits

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
_REQUIRED = ("memory", "pids")
_warned: set[str] = set()

LimitKind = Literal["memory", "pids"]


def format_mb(mb: int) -> str:
    """``8192`` -> ``"8 GiB"``, ``1536`` -> ``"1536 MiB"``."""
    return f"{mb // 1024} GiB" if mb % 1024 == 0 else f"{mb} MiB"


def limit_message(kind: LimitKind, limits: SandboxLimits) -> str:
    """What the model ran into, for an instance's or a prediction's error."""
    if kind == "memory":
        limit = f": limit {format_mb(limits.memory_mb)}" if limits.memory_mb is not None else ""
        return f"ran out of memory{limit}"
    limit = f": {limits.pids} processes" if limits.pids is not None else ""
    return f"hit the process limit{limit}"


def rlimits(limits: SandboxLimits) -> Callable[[], None]:
    """A ``preexec_fn`` (or part of one) setting ``RLIMIT_CORE`` to 0 and ``RLIMIT_NPROC`` to ``pids``.

    ``RLIMIT_NPROC`` binds only non-root uids, and counts every process of that *uid* on the host, not of
    this instance: instances sharing a uid share it. The cgroup's ``pids.max`` is the per-instance bound."""
    settings: list[tuple[int, tuple[int, int]]] = [(resource.RLIMIT_CORE, (0, 0))]
    if limits.pids is not None:
        settings.append((resource.RLIMIT_NPROC, (limits.pids, limits.pids)))
    frozen = tuple(settings)

    def apply() -> None:
        for which, value in frozen:
            resource.setrlimit(which, value)

    return apply


def confine(cgroup: Cgroup | None, limits: SandboxLimits) -> Callable[[], None]:
    """A ``preexec_fn`` (or part of one): join ``cgroup`` (opened now, see :meth:`Cgroup.prepare_attach`),
    then take :func:`rlimits`. The caller closes the cgroup's descriptors once the child is spawned."""
    attach = cgroup.prepare_attach() if cgroup is not None else None
    # RLIMIT_NPROC counts a uid's processes host-wide: only where cogport is root, so that the sandbox runs as
    # the model's own uid (otherwise it would count cogport's own processes).
    bound = rlimits(limits if os.geteuid() == 0 else limits.model_copy(update={"pids": None}))

    def apply() -> None:
        if attach is not None:
            attach()
        bound()

    return apply


def tmpfs_args(limits: SandboxLimits) -> list[str]:
    """bubblewrap arguments for a private ``/tmp`` capped at ``tmp_mb`` (``--size`` must precede ``--tmpfs``).

    The tmpfs's pages are charged to the memory cgroup of whoever writes them, so they count towards
    ``memory_mb`` as well."""
    size = [] if limits.tmp_mb is None else ["--size", str(limits.tmp_mb * 1024 * 1024)]
    return [*size, "--tmpfs", "/tmp"]


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        log.warning("no resource-limiting cgroup for sandboxes: %s", reason)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _write(path: Path, value: str) -> None:
    """Write to an existing control file (never creates one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _keyed(path: Path, key: str) -> int | None:
    """The value of ``key`` in a flat-keyed file (``memory.events``, ``pids.events``, ``memory.oom_control``)."""
    text = _read(path)
    if text is None:
        return None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == key:
            return int(parts[1])
    return None


def _self_cgroups() -> dict[str, str]:
    """``/proc/self/cgroup`` as controller -> path; the v2 entry under the key ``""``."""
    paths: dict[str, str] = {}
    for line in (_read(Path("/proc/self/cgroup")) or "").splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            paths[controller] = path
    return paths


def _procs(directory: Path) -> list[int]:
    text = _read(directory / "cgroup.procs") or ""
    return [int(pid) for pid in text.split()]


def _ancestors(path: str) -> list[str]:
    """``/a/b`` -> ``["a/b", "a", ""]``: relative paths from a cgroup up to the root."""
    parts = [part for part in path.split("/") if part]
    return ["/".join(parts[:i]) for i in range(len(parts), -1, -1)]


def _v2_root(root: Path) -> Path | None:
    for candidate in (root, root / "unified"):
        controllers = (_read(candidate / "cgroup.controllers") or "").split()
        if all(c in controllers for c in _REQUIRED):
            return candidate
    return None


def _enable(directory: Path, controllers: Iterable[str]) -> None:
    enabled = (_read(directory / "cgroup.subtree_control") or "").split()
    missing = [c for c in controllers if c not in enabled]
    if missing:
        _write(directory / "cgroup.subtree_control", " ".join(f"+{c}" for c in missing))


def _v2_parent(mount: Path, own: str) -> tuple[Path, bool]:
    """The ``cogport`` directory instance cgroups go in, and whether ``cpu`` is enabled in it."""
    failure: OSError | None = None
    for base in _ancestors(own):
        directory = mount / base if base else mount
        if not all(c in (_read(directory / "cgroup.controllers") or "").split() for c in _REQUIRED):
            continue
        try:
            _enable(directory, _REQUIRED)
            parent = directory / "cogport"
            parent.mkdir(exist_ok=True)
            _enable(parent, _REQUIRED)
        except OSError as e:
            failure = e  # EBUSY: the base holds processes; go up a level
            continue
        cpu = True
        try:
            _enable(directory, ["cpu"])
            _enable(parent, ["cpu"])
        except OSError:
            cpu = False
        return parent, cpu
    raise failure or OSError(errno.ENOENT, "no cgroup offers the memory and pids controllers")


def _v1_parent(root: Path, controller: str, own: str | None) -> Path:
    mount = root / controller
    if not (mount / "tasks").exists():
        raise OSError(errno.ENOENT, f"no cgroup v1 {controller} controller at {mount}")
    failure: OSError | None = None
    base = mount / own.strip("/") if own else mount
    if base != mount and base.is_dir():
        try:
            (base / "cogport").mkdir(exist_ok=True)
            return base / "cogport"
        except OSError as e:
            failure = e
    try:
        (mount / "cogport").mkdir(exist_ok=True)
    except OSError as e:
        raise failure or e from None
    return mount / "cogport"


def _kill_all(directories: Iterable[Path]) -> None:
    for directory in directories:
        kill = directory / "cgroup.kill"
        if kill.exists():
            with contextlib.suppress(OSError):
                _write(kill, "1")
                continue
        for pid in _procs(directory):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _empty_and_remove(directories: list[Path], timeout: float) -> bool:
    """SIGKILL what is in ``directories`` until they are empty, then rmdir them; whether all went."""
    deadline = time.monotonic() + timeout
    pending = [d for d in directories if d.exists()]
    while pending:
        _kill_all(pending)
        for directory in list(pending):
            if not _procs(directory):
                try:
                    directory.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    continue
                pending.remove(directory)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return not pending


def cgroup_name(unique: str) -> str:
    """The name of an instance's cgroup: this server's pid, then ``unique`` (see :meth:`Cgroup._fresh`)."""
    return f"{os.getpid()}-{unique}"


def _owner_alive(name: str) -> bool:
    """Whether the server that made the cgroup ``name`` still runs (names without a pid count as alive)."""
    pid, sep, _ = name.partition("-")
    if not sep or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Cgroup:
    """One instance's cgroup (v2: one directory; v1: one per controller). Make one with :meth:`create`."""

    def __init__(self, name: str, limits: SandboxLimits, version: Literal[1, 2], dirs: dict[str, Path]) -> None:
        self.name = name
        self.limits = limits
        self.version: Literal[1, 2] = version
        self.dirs = dirs
        """controller (``memory``, ``pids``, ``cpu`` where limited) -> its directory."""
        self._attach_fds: list[int] = []
        self._oom_base = self._oom_count()
        self._pids_base = self._pids_count()

    @property
    def paths(self) -> list[Path]:
        """The distinct directories of this cgroup."""
        return list(dict.fromkeys(self.dirs.values()))

    @classmethod
    def create(cls, name: str, limits: SandboxLimits, *, root: Path = CGROUP_ROOT) -> Cgroup | None:
        """Make (or take over, from a crashed run) the cgroup ``name`` with ``limits`` written; ``None``
        (logged once at WARNING) when this host gives no cgroup: not root, read-only, no controllers."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a cgroup name: {name!r}")
        own = _self_cgroups()
        try:
            mount = _v2_root(root)
            if mount is not None:
                parent, cpu = _v2_parent(mount, own.get("", "/"))
                directory = cls._fresh(parent / name)
                dirs = {c: directory for c in (*_REQUIRED, "cpu") if c != "cpu" or cpu}
                group = cls(name, limits, 2, dirs)
            else:
                wanted = [*_REQUIRED, "cpu"] if limits.cpus is not None else list(_REQUIRED)
                dirs = {}
                for controller in wanted:
                    try:
                        dirs[controller] = cls._fresh(_v1_parent(root, controller, own.get(controller)) / name)
                    except OSError:
                        if controller != "cpu":
                            raise
                        _warn_once("no cgroup v1 cpu controller: the cpus limit is not applied")
                group = cls(name, limits, 1, dirs)
        except OSError as e:
            _warn_once(f"{e.strerror or e} ({e.filename or root})")
            return None
        try:
            group._apply()
        except OSError as e:
            _empty_and_remove(group.paths, 1.0)
            _warn_once(f"cannot write limits: {e.strerror or e} ({e.filename})")
            return None
        return group

    @staticmethod
    def _fresh(directory: Path) -> Path:
        """Make ``directory``. Names start with the pid of the server that made them (:func:`cgroup_name`), so
        that leftovers of servers that are gone can be told apart: those beside it are removed when empty
        (a cgroup with processes in it cannot be removed). Another live server's cgroups, even empty ones
        about to receive an instance, are never touched."""
        for sibling in directory.parent.iterdir() if directory.parent.is_dir() else ():
            if sibling.is_dir() and sibling != directory and not _owner_alive(sibling.name):
                with contextlib.suppress(OSError):
                    sibling.rmdir()
        directory.mkdir(exist_ok=True)
        return directory

    def _apply(self) -> None:
        limits = self.limits
        memory, pids, cpu = self.dirs["memory"], self.dirs["pids"], self.dirs.get("cpu")
        if self.version == 2:
            _write(memory / "memory.max", "max" if limits.memory_mb is None else str(limits.memory_mb << 20))
            if (memory / "memory.swap.max").exists():
                _write(memory / "memory.swap.max", "0" if limits.memory_mb is not None else "max")
            _write(pids / "pids.max", "max" if limits.pids is None else str(limits.pids))
            if cpu is not None:
                quota = "max" if limits.cpus is None else str(max(1000, round(limits.cpus * CPU_PERIOD_US)))
                _write(cpu / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            return
        memsw = memory / "memory.memsw.limit_in_bytes"
        value = "-1" if limits.memory_mb is None else str(limits.memory_mb << 20)
        if memsw.exists():
            _write(memsw, "-1")  # memsw may never be below the memory limit, whatever the order
        _write(memory / "memory.limit_in_bytes", value)
        if memsw.exists():
            _write(memsw, value)
        _write(pids / "pids.max", "max" if limits.pids is None else str(limits.pids))
        if cpu is not None:
            quota = "-1" if limits.cpus is None else str(max(1000, round(limits.cpus * CPU_PERIOD_US)))
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", quota)

    def add_pid(self, pid: int) -> None:
        """Move ``pid`` (the whole process) into this cgroup. Raises ``OSError`` when that fails."""
        for directory in self.paths:
            _write(directory / "cgroup.procs", str(pid))

    def prepare_attach(self) -> Callable[[], None]:
        """A ``preexec_fn`` moving the child into this cgroup before it execs (raising if that fails, so
        no child runs unconfined). Opens the ``cgroup.procs`` files now; :meth:`close_attach` after spawn."""
        self.close_attach()
        self._attach_fds = [os.open(d / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC) for d in self.paths]
        fds = tuple(self._attach_fds)

        def attach() -> None:
            for fd in fds:
                os.write(fd, b"0")  # "0": the writing process (v1 and v2)

        return attach

    def close_attach(self) -> None:
        """Close the files :meth:`prepare_attach` opened (in the parent, once the child has started)."""
        fds, self._attach_fds = self._attach_fds, []
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)

    def pids(self) -> list[int]:
        """The processes in this cgroup now."""
        return sorted({pid for d in self.paths for pid in _procs(d)})

    def _oom_count(self) -> int:
        memory = self.dirs["memory"]
        if self.version == 2:
            return _keyed(memory / "memory.events", "oom_kill") or 0
        return _keyed(memory / "memory.oom_control", "oom_kill") or 0

    def _pids_count(self) -> int:
        return _keyed(self.dirs["pids"] / "pids.events", "max") or 0

    def oom_killed(self) -> bool:
        """Whether the kernel OOM-killed a process of this cgroup since :meth:`create`. (A v1 kernel without
        ``oom_kill`` in ``memory.oom_control`` always says ``False``: see :meth:`memory_failcnt`.)"""
        return self._oom_count() > self._oom_base

    def memory_failcnt(self) -> int | None:
        """v1's ``memory.failcnt`` (``None`` on v2): how often the limit was hit. Kernels that keep it only
        while ``memory.oom_control`` lacks ``oom_kill``; a SIGKILL with a nonzero count is an OOM kill."""
        if self.version == 2:
            return None
        text = _read(self.dirs["memory"] / "memory.failcnt")
        return None if text is None else int(text)

    def pids_limited(self) -> bool:
        """Whether a fork or clone failed on ``pids.max`` since :meth:`create`."""
        return self._pids_count() > self._pids_base

    def memory_peak_bytes(self) -> int | None:
        """The most memory this cgroup used (``memory.peak``, v1 ``memory.max_usage_in_bytes``), if known."""
        file = "memory.peak" if self.version == 2 else "memory.max_usage_in_bytes"
        text = _read(self.dirs["memory"] / file)
        return None if text is None else int(text)

    def violation(self) -> str | None:
        """The message for the limit the model ran into, if any (memory first)."""
        if self.oom_killed():
            return limit_message("memory", self.limits)
        if self.pids_limited():
            return limit_message("pids", self.limits)
        return None

    def remove(self, timeout: float = 5.0) -> bool:
        """SIGKILL whatever is left in the cgroup (``cgroup.kill`` where the kernel has it) and remove its
        directories, waiting up to ``timeout`` seconds; whether they all went. Never raises. Blocks: call it
        from a thread in async code."""
        self.close_attach()
        try:
            return _empty_and_remove(self.paths, timeout)
        except Exception:
            log.exception("removing cgroup %s", self.name)
            return False
