"""Findings 3 and 4 (another tenant's instance): two models of two tenants on one backend.

3. ``netscan`` (bob) scans for a way to ``hello`` (alice): every listening TCP port and unix socket it can
   find, common ports, and alice's own socket paths on the host; none may lead to alice.
4. ``squatter`` (bob) holds coglet's abstract socket names (``@coglet-<pid>-<slot>``) before alice starts;
   alice must still start and answer correctly.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from urllib.parse import urlsplit

from cogport.files.urls import internal_base_url
from cogport.runtime.sandbox import COGLET_PORT, EGRESS_PORT
from tests.hostile.conftest import MakeBackend, found, hostile, predict
from tests.support.runtime import spec

HELLO_MARKER = "Who to greet"
"""In alice's (``hello``'s) schema only: an answer holding it came from alice's coglet."""


def all_exist(paths: list[str]) -> bool:
    return all(Path(p).exists() for p in paths)


async def test_an_instance_finds_no_way_to_another_tenants_instance(make_backend: MakeBackend) -> None:
    backend = await make_backend()
    alice = dataclasses.replace(spec("hello", pk=1), tenant=11)
    first = await predict(backend, alice, text="ada")
    assert first["status"] == "succeeded" and first["output"] == "hello ada", first
    [alice_instance] = backend.details()
    assert alice_instance.tmpdir is not None
    alice_paths = [str(Path(alice_instance.tmpdir) / name) for name in ("coglet.sock", "gateway.sock", "egress.sock")]
    assert all_exist(alice_paths)  # they are there, on the host

    bob = hostile("netscan", pk=2, tenant=12)
    report = found(await predict(backend, bob, arg=json.dumps({"paths": alice_paths, "marker": HELLO_MARKER})))

    assert not [target for target, answer in report["connected"].items() if answer["reached_other"]], report
    assert not [p for p in alice_paths if f"unix {p}" in report["connected"]], report
    # What bob reaches is its own: its coglet, its egress proxy and cogport's gateway inside its namespace.
    internal_port = urlsplit(internal_base_url(backend.settings)).port
    own_ports = {COGLET_PORT, EGRESS_PORT, internal_port}
    assert set(report["listening"]) <= own_ports, report["listening"]
    tcp = {int(t.rsplit(":", 1)[1]) for t in report["connected"] if t.startswith("tcp ")}
    assert tcp <= own_ports and COGLET_PORT in tcp, report["connected"]  # the scan worked: it found its own
    unix = {t.split(" ", 1)[1] for t in report["connected"] if t.startswith("unix ")}
    assert all(p.startswith("/run/cogport/") for p in unix), unix
    # Alice is untouched.
    again = await predict(backend, alice, text="bo")
    assert again["status"] == "succeeded" and again["output"] == "hello bo", again


async def test_squatted_coglet_socket_names_do_not_stop_another_tenant(make_backend: MakeBackend) -> None:
    backend = await make_backend()
    bob = hostile("squatter", pk=2, tenant=12)
    held = found(await predict(backend, bob, arg=""))
    assert held["held"] >= 190, held  # 200 names, less the few its own coglet had taken

    alice = dataclasses.replace(spec("hello", pk=1), tenant=11)
    for name in ("ada", "bo"):
        final = await predict(backend, alice, within=60, text=name)
        assert final["status"] == "succeeded" and final["output"] == f"hello {name}", final
    assert found(await predict(backend, bob, arg=""))["held"] == held["held"]  # bob held them throughout
