"""The host's accelerators and the hardware SKUs this installation can run.

The GPU inventory is ``COGPORT_GPUS`` when set (a JSON list such as ``[{"index": 0, "name": "NVIDIA
A100-SXM4-80GB"}]``: operators who reserve GPUs, and tests), else what ``nvidia-smi`` reports (index, uuid,
name, memory), else none. The SKUs are ``cpu``, each GPU type's Replicate name (``gpu-a100-large``) and the
multi-GPU forms the host can hold (``-2x``, ``-4x``, ``-8x``), and operator additions (``COGPORT_HARDWARE``).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass

from cogport.settings import GpuSpec, HardwareSku, Settings

CPU = "cpu"
_MULTI = re.compile(r"^(?P<base>.+)-(?P<count>[0-9]+)x$")


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    uuid: str = ""
    memory_mb: int = 0

    @property
    def sku(self) -> str:
        return sku_for_gpu(self.name)[0]


def parse_sku(sku: str) -> tuple[str, int]:
    """``(GPU type SKU, how many)`` of a hardware SKU: ``cpu`` → ``("cpu", 0)``, ``gpu-t4`` → ``("gpu-t4", 1)``,
    ``gpu-a100-large-2x`` → ``("gpu-a100-large", 2)``."""
    if sku == CPU:
        return CPU, 0
    match = _MULTI.match(sku)
    if match:
        return match.group("base"), int(match.group("count"))
    return sku, 1


_KNOWN = [
    (re.compile(r"\bT4\b"), "gpu-t4", "Nvidia T4 GPU"),
    (re.compile(r"L40S"), "gpu-l40s", "Nvidia L40S GPU"),
    (re.compile(r"A100.*80"), "gpu-a100-large", "Nvidia A100 (80GB) GPU"),
    (re.compile(r"A100"), "gpu-a100", "Nvidia A100 GPU"),
    (re.compile(r"A40\b"), "gpu-a40-large", "Nvidia A40 (Large) GPU"),
    (re.compile(r"H100"), "gpu-h100", "Nvidia H100 GPU"),
    (re.compile(r"H200"), "gpu-h200", "Nvidia H200 GPU"),
]


def sku_for_gpu(gpu_name: str) -> tuple[str, str]:
    for pattern, sku, name in _KNOWN:
        if pattern.search(gpu_name):
            return sku, name
    slug = re.sub(r"[^a-z0-9]+", "-", gpu_name.lower().replace("nvidia", "")).strip("-")
    return f"gpu-{slug}", gpu_name


def detect_gpus() -> list[Gpu]:
    """The GPUs ``nvidia-smi`` reports (empty when there is none)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    query = "--query-gpu=index,uuid,name,memory.total"
    try:
        out = subprocess.run(
            [exe, query, "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) >= 3 and fields[0].isdigit():
            memory = fields[3] if len(fields) > 3 and fields[3].isdigit() else "0"
            gpus.append(Gpu(index=int(fields[0]), uuid=fields[1], name=fields[2], memory_mb=int(memory)))
    return gpus


def inventory(settings: Settings) -> list[Gpu]:
    """The GPUs this installation may hand to instances (see the module docstring)."""
    if settings.gpus is not None:
        return [_from_spec(spec, position) for position, spec in enumerate(settings.gpus)]
    return detect_gpus() if settings.detect_gpus else []


def _from_spec(spec: GpuSpec, position: int) -> Gpu:
    index = spec.index if spec.index is not None else position
    return Gpu(index=index, name=spec.name, uuid=spec.uuid or "", memory_mb=spec.memory_mb or 0)


def skus_for(gpu_names: list[str]) -> list[HardwareSku]:
    skus: list[HardwareSku] = []
    for gpu_name, count in Counter(gpu_names).items():
        sku, name = sku_for_gpu(gpu_name)
        skus.append(HardwareSku(sku=sku, name=name))
        for n in (2, 4, 8):
            if count >= n:
                skus.append(HardwareSku(sku=f"{sku}-{n}x", name=f"{n}x {name}"))
    return skus


def available(settings: Settings, gpus: list[Gpu] | None = None) -> list[HardwareSku]:
    """``cpu``, the SKUs the GPUs can hold (``gpus``, or the inventory), and the operator's additions."""
    skus = [HardwareSku(sku=CPU, name="CPU")]
    skus += skus_for([gpu.name for gpu in (inventory(settings) if gpus is None else gpus)])
    seen = {s.sku for s in skus}
    skus += [s for s in settings.hardware if s.sku not in seen]
    return skus
