"""Finding 7 (limits): the ``limits`` model overruns ``/tmp``, memory and processes, and goes for the cloud
metadata service; each is stopped, the model is told (or the prediction fails naming the limit), and the
backend carries on."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cogport.build.errors import BuildError
from cogport.build.log import BuildLog
from cogport.build.packing import readable
from cogport.build.schema import inspect_model
from cogport.runtime.sandbox import Sandbox
from cogport.settings import SandboxLimits, SandboxSettings
from tests.hostile.conftest import ROOT, MakeBackend, found, hostile, predict
from tests.support.runtime import cog_venv, spec


async def test_tmp_is_capped(make_backend: MakeBackend) -> None:
    # Per hardware SKU: the cpu SKU's own tmp_mb replaces the default's.
    backend = await make_backend(SandboxSettings(hardware_limits={"cpu": SandboxLimits(tmp_mb=16)}))
    report = found(await predict(backend, hostile("limits", tenant=31), arg="tmp"))
    assert report["error"] == "ENOSPC" and report["written_mb"] <= 16, report


async def test_memory_is_capped_and_the_instance_replaced(make_backend: MakeBackend) -> None:
    backend = await make_backend(SandboxSettings(limits=SandboxLimits(memory_mb=128)))
    version = hostile("limits", tenant=32)
    assert found(await predict(backend, version, arg=""))["fine"]
    [before] = backend.details()

    final = await predict(backend, version, arg="memory")
    assert final["status"] == "failed", final
    assert "ran out of memory: limit 128 MiB" in final["error"], final

    assert found(await predict(backend, version, arg=""))["fine"]  # a new instance of the same version
    assert [i.pid for i in backend.details() if i.key == version.key] != [before.pid]
    hello = dataclasses.replace(spec("hello", pk=2), tenant=33)
    other = await predict(backend, hello, text="ada")  # and another model on the same backend
    assert other["status"] == "succeeded" and other["output"] == "hello ada", other


async def test_processes_are_capped(make_backend: MakeBackend) -> None:
    backend = await make_backend(SandboxSettings(limits=SandboxLimits(pids=64)))
    version = hostile("limits", tenant=34)
    report = found(await predict(backend, version, arg="forkbomb"))
    assert report["error"] == "EAGAIN" and report["forked"] < 64, report
    assert found(await predict(backend, version, arg=""))["fine"]  # the instance carries on


async def test_no_route_to_the_metadata_service(make_backend: MakeBackend) -> None:
    backend = await make_backend()
    report = found(await predict(backend, hostile("limits", tenant=35), arg="metadata"))
    assert report["error"] in ("ENETUNREACH", "EHOSTUNREACH"), report


async def test_the_schema_step_is_capped_too(tmp_path: Path) -> None:
    """Push time: a ``predict.py`` that grabs memory at import fails the build, naming the limit."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "predict.py").write_text(
        "hog = bytearray(512 << 20)\n"
        "for i in range(0, len(hog), 4096):\n"
        "    hog[i] = 1\n"
        "from cog import BasePredictor\n\n"
        "class Predictor(BasePredictor):\n"
        "    def predict(self) -> str:\n"
        "        return ''\n"
    )
    readable(source)
    sandbox = Sandbox(limits=SandboxLimits(memory_mb=96))
    with pytest.raises(BuildError, match="ran out of memory: limit 96 MiB") if ROOT else pytest.raises(BuildError):
        await inspect_model(
            cog_venv(),
            source,
            predict="predict.py:Predictor",
            train=None,
            env={"PATH": "/usr/bin:/bin"},
            log=BuildLog(),
            time_limit=120,
            sandbox=sandbox,
            tenant=35,
        )
