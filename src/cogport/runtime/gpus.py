"""Which GPUs each instance holds: each GPU belongs to at most one instance at a time.

An instance of a spec whose hardware is ``gpu-<type>[-Nx]`` takes N free GPUs of that type when it starts
(they reach coglet as ``CUDA_VISIBLE_DEVICES``) and gives them back when it has stopped; a ``cpu``
instance takes none and sees none. The pool asks :meth:`GpuAllocator.fits` before it starts an instance
and, when the GPUs are all held, stops an idle instance that holds GPUs of the type (see ``runtime/pool.py``).
"""

from __future__ import annotations

from collections.abc import Iterable

from cogport.hardware import CPU, Gpu, parse_sku


class GpuAllocator:
    def __init__(self, gpus: Iterable[Gpu]) -> None:
        self._gpus = {gpu.index: gpu for gpu in gpus}
        self._held: dict[int, str] = {}
        """GPU index → the name of the instance holding it."""

    def needs(self, hardware: str) -> tuple[str, int]:
        """``(GPU type, how many)`` an instance on ``hardware`` needs (``("cpu", 0)`` for none)."""
        return parse_sku(hardware)

    def exists(self, hardware: str) -> bool:
        """Whether this host has enough GPUs of the type at all (held or not)."""
        kind, count = self.needs(hardware)
        return kind == CPU or sum(1 for gpu in self._gpus.values() if gpu.sku == kind) >= count

    def fits(self, hardware: str) -> bool:
        """Whether enough GPUs of the type are free now."""
        kind, count = self.needs(hardware)
        return kind == CPU or len(self._free(kind)) >= count

    def take(self, hardware: str, holder: str) -> tuple[int, ...]:
        """Hold GPUs for ``holder`` (the lowest free indices of the type); ``()`` for a CPU instance.
        Raises ``LookupError`` when they are not free (check :meth:`fits`)."""
        kind, count = self.needs(hardware)
        if kind == CPU:
            return ()
        free = self._free(kind)
        if len(free) < count:
            raise LookupError(f"{count} free {kind} GPU(s) are needed, {len(free)} are free")
        chosen = tuple(sorted(free)[:count])
        for index in chosen:
            self._held[index] = holder
        return chosen

    def release(self, indices: Iterable[int]) -> None:
        for index in indices:
            self._held.pop(index, None)

    def holder(self, index: int) -> str | None:
        return self._held.get(index)

    def _free(self, kind: str) -> list[int]:
        return [index for index, gpu in self._gpus.items() if gpu.sku == kind and index not in self._held]
