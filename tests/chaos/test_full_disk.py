"""The data dir's disk fills up under load and space comes back (issue 19, finding 3): the data dir is a small
tmpfs the test mounts, filled to the last byte by a file the test then removes.

While it is full: every request gets an answer (no dropped connection); what cannot be stored is a 507
(an upload; on SQLite, whose database is in the data dir, a create) with Retry-After and a short problem
body, never a 500 or driver text; the log holds a few lines. Runs keep their end: once space is back each
ends as the model ended it, exactly once (one ``completed`` webhook each).

Mounting a tmpfs needs root; elsewhere the test is skipped, saying so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cogport.settings import Settings
from tests.chaos.conftest import Load, check_fault_answer, wait_until
from tests.conftest import PG_URL, LiveServer
from tests.support.models import push_fixture
from tests.support.predictions import create, get
from tests.support.pushing import shared_build_dirs, shared_venvs  # noqa: F401 - fixtures
from tests.support.webhooks import Receiver

pytestmark = [
    pytest.mark.usefixtures("shared_build_dirs"),
    pytest.mark.skipif(os.geteuid() != 0, reason="mounting the small filesystem the test fills needs root"),
    pytest.mark.timeout(240),
]

TERMINAL = {"succeeded", "failed", "canceled", "aborted"}


@pytest.fixture
def small_disk() -> Iterator[Path]:
    mount = Path(tempfile.mkdtemp(prefix="cogport-full-"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m,mode=0755", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


@pytest.fixture
def settings(settings: Settings, small_disk: Path) -> Settings:
    settings.data_dir = small_disk / "data"
    return settings


def fill(directory: Path) -> Path:
    """Fill ``directory``'s filesystem to the last byte with one file; returns it."""
    filler = directory / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            block = b"\0" * size
            with contextlib.suppress(OSError):
                while True:
                    os.write(descriptor, block)
    finally:
        os.close(descriptor)
    probe = directory / "probe"
    try:
        probe.write_bytes(b"x" * 8192)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    else:
        probe.unlink()
        raise AssertionError("the filesystem still has room")
    return filler


def test_a_full_disk_answers_507_and_loses_no_result(
    live_server: LiveServer, receiver: Receiver, small_disk: Path, tmp_path: Path
) -> None:
    version = push_fixture(live_server, tmp_path, "noop")
    hooks: dict[str, Any] = {"webhook": receiver.url, "webhook_events_filter": ["completed"]}
    before = [create(live_server, version, {}, **hooks)["id"] for _ in range(3)]

    with Load(live_server.url, version, hooks, run_input={}, uploads=True) as load:
        wait_until(lambda: load.count(lambda a: a.operation == "upload" and a.status == 201) >= 2, "uploads before")
        filler = fill(small_disk)
        full = load.answers[-1].at
        wait_until(lambda: load.count(lambda a: a.operation == "upload" and a.status == 507, full) >= 5, "507s")
        if not PG_URL:  # SQLite's database is on the full disk: creates cannot be stored either
            wait_until(
                lambda: load.count(lambda a: a.operation in ("create", "sync") and a.status == 507, full) >= 5,
                "creates refused",
            )
        filler.unlink()
        freed = load.answers[-1].at
        for operation in ("upload", "create", "sync"):

            def works(op: str = operation) -> bool:
                return load.count(lambda a: a.operation == op and a.status == 201, freed) >= 2

            wait_until(works, f"{operation} works again")

    assert load.dropped() == [], load.dropped()[:3]
    for answer in load.errors():
        check_fault_answer(answer, {507, 503})
    uploads_refused = [a for a in load.answers if a.operation == "upload" and a.status == 507]
    assert "disk is full" in uploads_refused[0].body

    runs = before + load.created
    wait_until(lambda: all(get(live_server, i)["status"] in TERMINAL for i in runs), "every run ended", 120)
    served = [a.at for a in load.answers if a.at >= freed and a.status == 201 and a.operation != "upload"]
    refused = Counter(a.operation for a in load.answers if a.status == 507)
    print(  # the figures of docs/operations.md ("Faults"), with -s
        f"\nfull {freed - full:.1f}s: {len(load.answers)} requests, 507 by operation {dict(refused)}, "
        f"{len(load.dropped())} dropped; first create after space came back {served[0] - freed:.2f}s; {len(runs)} runs"
    )
    ends = {i: get(live_server, i)["status"] for i in runs}
    assert {i: status for i, status in ends.items() if status != "succeeded"} == {}
    wait_until(lambda: len({d.json["id"] for d in receiver.deliveries}) >= len(runs), "a webhook per run", 120)
    completed = Counter(d.json["id"] for d in receiver.deliveries if d.status in TERMINAL)
    assert {i: n for i, n in completed.items() if n != 1} == {}
    assert set(completed) == set(runs)
