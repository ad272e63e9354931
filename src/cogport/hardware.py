"""The hardware SKUs this installation can run: ``cpu``, detected GPUs, and operator additions."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter

from cogport.settings import HardwareSku, Settings

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


def detect_gpus() -> list[str]:
    """GPU names from ``nvidia-smi`` (empty when there is none)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def skus_for(gpu_names: list[str]) -> list[HardwareSku]:
    skus: list[HardwareSku] = []
    for gpu_name, count in Counter(gpu_names).items():
        sku, name = sku_for_gpu(gpu_name)
        skus.append(HardwareSku(sku=sku, name=name))
        for n in (2, 4, 8):
            if count >= n:
                skus.append(HardwareSku(sku=f"{sku}-{n}x", name=f"{n}x {name}"))
    return skus


def available(settings: Settings) -> list[HardwareSku]:
    skus = [HardwareSku(sku="cpu", name="CPU")]
    if settings.detect_gpus:
        skus += skus_for(detect_gpus())
    seen = {s.sku for s in skus}
    skus += [s for s in settings.hardware if s.sku not in seen]
    return skus
