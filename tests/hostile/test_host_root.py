"""Finding 1 (host root): model code never runs as host root, and cannot become root again.

The ``root`` model reports its uids, capabilities and ``no_new_privs``, tries ``/proc/sys/kernel/core_pattern``,
``unshare(CLONE_NEWUSER)`` (and mount and network namespaces) and the host's setuid-root binaries.
"""

from __future__ import annotations

import os
from typing import Any

from tests.hostile.conftest import ROOT, UID_BASE, MakeBackend, found, hostile, predict


def assert_not_root(report: dict[str, Any], uid: int) -> None:
    assert 0 not in report["resuid"] and 0 not in report["resgid"], report
    assert report["resuid"] == [uid, uid, uid], report
    assert report["groups"] == [] or 0 not in report["groups"], report
    status = report["status"]
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(status[caps], 16) == 0, (caps, status)
    assert status["NoNewPrivs"] == "1", status
    assert status["Seccomp"] == "2", status  # a filter
    assert report["core_pattern"] in ("EROFS", "EACCES", "EPERM"), report
    assert report["unshare"] == {"user": "EPERM", "mount": "EPERM", "net": "EPERM"}, report
    for binary in ("su", "newgrp"):
        # The binary ran (the attempt was real) and never with euid 0.
        assert report[binary]["exec"] == "ok" and 0 not in report[binary]["euids"], (binary, report[binary])


async def test_model_code_is_not_host_root(make_backend: MakeBackend) -> None:
    backend = await make_backend()
    report = found(await predict(backend, hostile("root", tenant=7), arg=""))
    assert_not_root(report, UID_BASE + 7 if ROOT else os.geteuid())
