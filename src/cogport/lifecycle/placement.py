"""Where a run runs: the spec its version gets (mode, hardware, pool, weights) and the SKU of its queue.

A run's spec is made once per (version, mode, hardware, deployment) and kept: versions never change. The
SKU comes from the run's deployment when it has one, else from its model. Trained weights are copied out
of storage for the runtime by the weights cache kept here (:mod:`cogport.runtime.weights`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from cogport.build import bundles
from cogport.core.jobs import VersionSpec
from cogport.core.kinds import Mode
from cogport.core.pools import ON_DEMAND, deployment_pool
from cogport.db.tables import Model, Version
from cogport.runtime.weights import WeightsCache
from cogport.settings import Settings
from cogport.storage.base import Storage

DeploymentHardware = Callable[[AsyncSession, str], Awaitable[str | None]]


class Placement:
    def __init__(self, storage: Storage, settings: Settings) -> None:
        self.weights = WeightsCache(storage, settings.data_dir / "cache" / "weights")
        """Trained weights copied out of storage for the runtime (see :mod:`cogport.runtime.weights`)."""
        self.deployment_hardware: DeploymentHardware | None = None
        """How a deployment's SKU is found (set by the app once deployments exist)."""
        self._specs: dict[tuple[int, str, str, str], VersionSpec] = {}

    async def hardware_of(self, session: AsyncSession, version: Version, deployment: str) -> str:
        """The SKU a queued run of ``version`` runs on: its deployment's, else its model's."""
        if deployment and self.deployment_hardware is not None:
            found = await self.deployment_hardware(session, deployment)
            if found is not None:
                return found
        model = await session.get(Model, version.model_id)
        return model.hardware if model is not None and model.hardware else "cpu"

    def spec(self, version: Version, mode: Mode, hardware: str = "cpu", deployment: str = "") -> VersionSpec:
        """The spec runs of ``version`` get on ``hardware`` (through ``deployment``: its own instances)."""
        key = (version.pk, mode, hardware, deployment)
        spec = self._specs.get(key)
        if spec is None:
            ref = version.train_ref if mode == "train" else version.predict_ref
            weights = str(self.weights.path_for(version.weights_key)) if version.weights_key else None
            spec = VersionSpec(
                version_pk=version.pk,
                version_id=version.id,
                mode=mode,
                source_path=version.source_path or "",
                venv_path=version.venv_path or "",
                ref=ref or "",
                concurrency=max(1, version.concurrency) if mode == "predict" else 1,
                environment={str(k): str(v) for k, v in (version.environment or {}).items()},
                weights=weights,
                weights_key=version.weights_key,
                hardware=hardware,
                pool=deployment_pool(deployment) if deployment else ON_DEMAND,
                tenant=version.model_id,
                bundle_key=bundles.bundle_key(version.id),
            )
            self._specs[key] = spec
        return spec
