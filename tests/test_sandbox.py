"""The model sandbox (bubblewrap): model code sees nothing of the server, at push time and at run time.

Real processes throughout: the ``snoop`` fixture model goes looking for the server's secrets in a
sandboxed instance, and a ``predict.py`` that reads a canary at import time goes through the schema step.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cogport.backends.local import LocalBackend
from cogport.build.log import BuildLog
from cogport.build.schema import inspect_model
from cogport.runtime import sandbox
from cogport.runtime.sandbox import Sandbox
from cogport.settings import RuntimeSettings, SandboxLimits, Settings
from tests.support.runtime import Events, cog_venv, group_alive, job, spec

CANARY = "canary-7f3a1c0e9b2d4e5f"


@pytest.fixture
def server_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir holding secrets, and secrets in this (the server's) environment; all contain CANARY."""
    data = tmp_path / "data"
    (data / "secrets").mkdir(parents=True)
    (data / "cogport.db").write_text(f"accounts and tokens {CANARY}")
    (data / "secrets" / "files_signing_key").write_text(CANARY)
    monkeypatch.setenv("COGPORT_ADMIN_TOKEN", CANARY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CANARY)  # not a COGPORT_ one: still not passed on
    return data


@pytest.fixture
async def backend(server_secrets: Path) -> AsyncIterator[LocalBackend]:
    """The default runtime settings: sandbox on, nothing extra bound."""
    the_backend = LocalBackend(Settings(data_dir=server_secrets, runtime=RuntimeSettings()))
    await the_backend.start()
    yield the_backend
    pgids = [i.pid for i in the_backend.details() if i.pid is not None]
    await the_backend.stop()
    assert all(group_alive(pgid) == [] for pgid in pgids)


async def test_a_model_reads_nothing_of_the_server(backend: LocalBackend, server_secrets: Path) -> None:
    events = Events()
    await backend.submit(job(spec("snoop"), data_dir=str(server_secrets)), events)
    final = await events.finish()
    assert final["status"] == "succeeded", final
    found = json.loads(final["output"])

    assert CANARY not in final["output"]  # no secret, from anywhere
    assert not any(k.startswith("COGPORT_") for k in found["environ"])
    assert "AWS_SECRET_ACCESS_KEY" not in found["environ"]
    assert found["data_dir"] is None and found["db"] is None and found["signing_key"] is None
    assert found["shadow"] is None
    # Its own PID namespace: bwrap's init, the sandbox's first program, the coglet server, its worker; never
    # the server's processes (pid numbers grow with the first program's relay threads: count, not numbers).
    assert len(found["processes"]) <= 4, found["processes"]
    commands = [p["cmdline"] for p in found["processes"].values()]
    first = str(sandbox.base_prefix(cog_venv()))  # the sandbox's first program runs on the base interpreter
    assert all(
        c.startswith((sandbox.bwrap_path(), str(cog_venv()), first, "python -c import coglet")) for c in commands
    ), commands
    assert found["init_environ"] is None or CANARY not in found["init_environ"]
    # A private /tmp (coglet's prediction dirs in it), not the host's; its own temp files work. The only other
    # entries are the mount points of its own read-only paths when they live under /tmp (a checkout there).
    own = {Path(p).parts[2] for p in (spec("snoop").source_path, str(cog_venv())) if Path(p).parts[1:2] == ("tmp",)}
    assert set(found["tmp"]) <= {"coglet"} | own, (found["tmp"], own)
    assert found["tmp_writable"] is True
    assert found["root"] is not None and not {"home", "var", "opt", "mnt"} & set(found["root"])
    # Its /tmp is a tmpfs of its own; the host reaches coglet's prediction dirs through /proc (the sweeper).
    [instance] = backend.details()
    assert instance.tmpdir is not None and (Path(instance.tmpdir) / "coglet.sock").exists()
    [live] = [i for group in backend.pool._groups.values() for i in group.instances]
    assert live.process is not None and live.process.prediction_dirs is not None
    assert live.process.prediction_dirs.is_dir()


async def test_a_crash_is_still_reported_with_its_exit_code(backend: LocalBackend) -> None:
    """Through bwrap, the worker's wait status still comes from /proc (process-group supervision)."""
    events = Events()
    await backend.submit(job(spec("crash")), events)
    final = await events.finish()
    assert final["status"] == "failed"
    assert final["error"].startswith("The model crashed (exit code -9)")


PREDICT_THAT_SNOOPS = """
import os
from cog import BaseRunner, Input

def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        return type(exc).__name__

FOUND = "canary:" + _read({canary!r}) + " env:" + os.environ.get("COGPORT_ADMIN_TOKEN", "none")

class Runner(BaseRunner):
    def run(self, text: str = Input(description=FOUND)) -> str:
        return text
"""


@pytest.mark.parametrize("sandboxed", [True, False])
async def test_the_schema_step_is_sandboxed(
    tmp_path: Path, server_secrets: Path, monkeypatch: pytest.MonkeyPatch, sandboxed: bool
) -> None:
    """predict.py, imported at push time, cannot read a file outside its directory nor the server's
    environment (unsandboxed, the same model does: the test has teeth)."""
    canary = tmp_path / "outside" / "canary.txt"
    canary.parent.mkdir()
    canary.write_text(CANARY)
    source = tmp_path / "source"
    source.mkdir()
    (source / "predict.py").write_text(textwrap.dedent(PREDICT_THAT_SNOOPS.format(canary=str(canary))))
    facts = await inspect_model(
        cog_venv(),
        source,
        predict="predict.py:Runner",
        train=None,
        env={"PATH": os.environ["PATH"], **({} if sandboxed else dict(os.environ))},
        log=BuildLog(),
        time_limit=120,
        sandbox=Sandbox() if sandboxed else None,
    )
    description = facts.schema["components"]["schemas"]["Input"]["properties"]["text"]["description"]
    if sandboxed:
        assert description == "canary:FileNotFoundError env:none"
    else:
        assert description == f"canary:{CANARY} env:{CANARY}"


def test_gpus_pass_through_to_instances_that_own_them(tmp_path: Path) -> None:
    devices = ["/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/dri"]
    venv, source = cog_venv(), tmp_path
    with_gpus = Sandbox().command(["python"], venv=venv, source=source, gpus=True, devices=devices)
    with_gpus.close()
    args = with_gpus.argv
    for device in devices:
        assert ["--dev-bind-try", device, device] == args[args.index(device) - 1 : args.index(device) + 2]
    launch = Sandbox(limits=SandboxLimits(tmp_mb=64)).command(["python"], venv=venv, source=source, devices=devices)
    launch.close()
    without = launch.argv
    assert not any(arg.startswith("/dev/nvidia") or arg == "/dev/dri" for arg in without)
    # The rest of the layout: the venv's base interpreter and the venv read-only, the source with a writable
    # layer, /tmp a size-capped tmpfs of its own, no host network, the first program then the command.
    prefix = sandbox.base_prefix(venv)
    assert (
        prefix is not None
        and ["--ro-bind-try", str(prefix), str(prefix)]
        == without[without.index(str(prefix)) - 1 : without.index(str(prefix)) + 2]
    )
    overlay = without.index("--overlay-src")
    assert without[overlay : overlay + 4] == ["--overlay-src", str(source), "--tmp-overlay", str(source)]
    assert without[without.index("/tmp") - 3 : without.index("/tmp") + 1] == [
        "--size",
        str(64 << 20),
        "--tmpfs",
        "/tmp",
    ]
    assert "--unshare-net" in without
    assert without[-4:-1] == ["-I", "-S", f"{sandbox.RUN_DIR}/init.py"]
    assert json.loads(without[-1])["argv"] == ["python"]


async def test_a_host_that_cannot_sandbox_fails_at_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sandbox, "bwrap_path", lambda: "/bin/false")
    backend = LocalBackend(Settings(data_dir=tmp_path, runtime=RuntimeSettings()))
    with pytest.raises(sandbox.SandboxUnavailable, match="COGPORT_RUNTIME__SANDBOX=off"):
        await backend.start()


async def test_sandbox_off_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    backend = LocalBackend(Settings(data_dir=tmp_path, runtime=RuntimeSettings(sandbox=False)))
    await backend.start()
    await backend.stop()
    assert "COGPORT_RUNTIME__SANDBOX=off" in caplog.text
