"""GPU placement with real coglet processes and a fake inventory (``COGPORT_GPUS``): each instance sees only
the GPUs its SKU names, never two instances on one GPU, work waits for a GPU, an idle GPU holder is stopped
for waiting work, a SKU the host lacks is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cogport import hardware
from cogport.backends.local import LocalBackend
from cogport.errors import SetupFailed
from cogport.settings import GpuSpec, RuntimeSettings, Settings
from tests.support.runtime import Events, eventually, job, spec

A100 = "NVIDIA A100-SXM4-80GB"


@pytest.fixture
async def make_backend(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[LocalBackend] = []

    async def make(gpus: list[str], **runtime: Any) -> LocalBackend:
        settings = Settings(
            data_dir=tmp_path / "data",
            gpus=[GpuSpec(name=name) for name in gpus],
            runtime=RuntimeSettings(**runtime),
        )
        backend = LocalBackend(settings)
        made.append(backend)
        await backend.start()
        return backend

    yield make
    for backend in made:
        await backend.stop()


async def run(backend: LocalBackend, sku: str, pk: int) -> str:
    events = Events()
    await backend.submit(job(spec("gpu_env", pk=pk, hardware=sku)), events)
    final = await events.finish()
    assert final["status"] == "succeeded", final
    output: str = final["output"]
    return output


def test_the_inventory_and_skus_come_from_cogport_gpus() -> None:
    settings = Settings(gpus=[GpuSpec(name=A100), GpuSpec(name=A100), GpuSpec(index=7, name="NVIDIA H100 80GB HBM3")])
    gpus = hardware.inventory(settings)
    assert [(g.index, g.sku) for g in gpus] == [(0, "gpu-a100-large"), (1, "gpu-a100-large"), (7, "gpu-h100")]
    assert [s.sku for s in hardware.available(settings)] == ["cpu", "gpu-a100-large", "gpu-a100-large-2x", "gpu-h100"]
    assert hardware.inventory(Settings(gpus=[], detect_gpus=True)) == []  # an empty list means none
    assert hardware.parse_sku("gpu-a100-large-2x") == ("gpu-a100-large", 2)
    assert hardware.parse_sku("gpu-t4") == ("gpu-t4", 1)
    assert hardware.parse_sku("cpu") == ("cpu", 0)


async def test_each_instance_sees_only_its_own_gpus(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend([A100, A100], max_instances=8)
    first, second = await asyncio.gather(run(backend, "gpu-a100-large", 1), run(backend, "gpu-a100-large", 2))
    assert sorted([first, second]) == ["0", "1"]  # two models, one GPU each
    assert await run(backend, "cpu", 3) == ""  # a CPU instance sees none
    held = [i.gpus for i in backend.details() if i.state.is_live]
    assert sorted(held) == [(), (0,), (1,)]


async def test_a_third_gpu_model_waits_then_takes_an_idle_holders_gpu(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend([A100, A100], max_instances=8)
    await asyncio.gather(run(backend, "gpu-a100-large", 1), run(backend, "gpu-a100-large", 2))
    # Both GPUs are held by idle instances: the third model's instance stops one of them and takes its GPU.
    third = await run(backend, "gpu-a100-large", 3)
    assert third in ("0", "1")
    live = [i for i in backend.details() if i.state.is_live]
    assert len(live) == 2 and sorted(g for i in live for g in i.gpus) == [0, 1]  # never two on one GPU


async def test_a_2x_sku_gets_two_gpus_and_waits_for_both(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend([A100, A100], max_instances=8)
    slow = spec("slow", pk=1, hardware="gpu-a100-large")
    busy = Events()
    await backend.submit(job(slow, seconds=3.0), busy)  # holds GPU 0 while it runs
    await eventually(lambda: any(i.gpus == (0,) and i.reserved for i in backend.details()))
    pair = Events()
    await backend.submit(job(spec("gpu_env", pk=2, hardware="gpu-a100-large-2x")), pair)
    await asyncio.sleep(1.0)
    assert pair.final is None  # waits: GPU 0 is busy, not idle
    final = await pair.finish()
    assert final["status"] == "succeeded" and final["output"] == "0,1"
    assert (await busy.finish())["status"] == "succeeded"


async def test_a_sku_the_host_lacks_is_refused(make_backend: Callable[..., Any]) -> None:
    backend: LocalBackend = await make_backend([A100])
    lacking = spec("gpu_env", pk=1, hardware="gpu-h100")
    refused = backend.capacity(lacking).refused
    assert refused is not None and "gpu-h100" in refused
    with pytest.raises(SetupFailed, match="gpu-a100-large-2x"):
        await backend.submit(job(spec("gpu_env", pk=2, hardware="gpu-a100-large-2x")), Events())
