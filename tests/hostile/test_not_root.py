"""Finding 1 again, with cogport not root: the backend runs as uid ``nobody`` (65534) in a forked child of
this test, and the ``root`` model must find the same: not root, no capabilities, ``core_pattern`` unwritable,
no user namespace of its own (bubblewrap's is the only one, with ``--disable-userns``).

The child is forked (no exec: it keeps this interpreter and everything imported) and made ``nobody`` after
one arrangement, as root, in a mount namespace of its own: this machine's interpreters and the shared cog
venv live under ``/root`` (mode 0700), so there ``/root`` becomes a 0755 tmpfs holding bind mounts of what
``/root`` holds. The sandbox then is the one cogport makes when it is not root (a user namespace mapping its
uid, no cgroups: those need root). Where the test itself is not root, the child runs as the test's uid.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import tempfile
import traceback
from pathlib import Path
from typing import Any

from cogport.backends.local import LocalBackend
from cogport.settings import RuntimeSettings, Settings
from tests.hostile.conftest import ROOT, found, hostile, predict
from tests.hostile.test_host_root import assert_not_root
from tests.support.runtime import cog_venv, group_alive

NOBODY = 65534
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
CLONE_NEWNS = 0x00020000


def _reachable_root(scratch: Path) -> None:
    """In this (child) process only: ``/root`` as a 0755 tmpfs with everything of the real one bound in."""
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            raise OSError(ctypes.get_errno(), what)

    check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
    stash = tempfile.mkdtemp(prefix="root-", dir=scratch)
    check(libc.mount(b"/root", stash.encode(), None, MS_BIND | MS_REC, None), "binding /root aside")
    check(libc.mount(b"tmpfs", b"/root", b"tmpfs", 0, b"mode=0755"), "a tmpfs over /root")
    for name in os.listdir(stash):
        source, target = os.path.join(stash, name), os.path.join("/root", name)
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
            continue
        if os.path.isdir(source):
            os.mkdir(target)
        else:
            Path(target).touch()
        check(libc.mount(source.encode(), target.encode(), None, MS_BIND | MS_REC, None), f"binding /root/{name}")


async def _run_model(data: Path) -> dict[str, Any]:
    backend = LocalBackend(Settings(data_dir=data, detect_gpus=False, runtime=RuntimeSettings()))
    await backend.start()
    try:
        final = await predict(backend, hostile("root", tenant=7), within=60, arg="")
    finally:
        pgids = [i.pid for i in backend.details() if i.pid is not None]
        await backend.stop()
    return {"final": final, "left": [pid for pgid in pgids for pid in group_alive(pgid)]}


def _as_nobody(work_dir: Path) -> dict[str, Any]:
    """Fork; in the child drop to ``nobody`` (when root) and run the model; what the child said."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            if ROOT:
                _reachable_root(work_dir)
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
            said = {"uid": list(os.getresuid()), **asyncio.run(_run_model(work_dir / "data"))}
        except BaseException:
            said = {"error": traceback.format_exc()}
        try:
            os.write(write, json.dumps(said).encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks: list[bytes] = []
    try:
        while True:
            ready, _, _ = select.select([read], [], [], 120)
            if not ready:
                raise AssertionError("the unprivileged backend did not finish within 120 s")
            chunk = os.read(read, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    said: dict[str, Any] = json.loads(b"".join(chunks))
    return said


def test_model_code_is_not_root_when_cogport_is_not_root() -> None:
    cog_venv()  # built (as the test's uid) before the child needs it
    work_dir = Path(tempfile.mkdtemp(prefix="cogport-test-nobody-"))  # outside pytest's 0700 temp dirs
    work_dir.chmod(0o777)
    try:
        said = _as_nobody(work_dir)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    assert "error" not in said, said.get("error")
    uid = NOBODY if ROOT else os.geteuid()
    assert said["uid"] == [uid] * 3  # cogport itself was not root
    report = found(said["final"])
    assert_not_root(report, uid)
    assert int(report["status"]["CapInh"], 16) == 0, report["status"]
    assert said["left"] == [], said
