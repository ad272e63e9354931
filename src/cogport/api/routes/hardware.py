from __future__ import annotations

from fastapi import APIRouter

from cogport.api.deps import CallDep
from cogport.schemas.responses import Hardware

router = APIRouter(tags=["hardware"])


@router.get("/v1/hardware")
async def list_hardware(call: CallDep) -> list[Hardware]:
    return [Hardware(sku=s.sku, name=s.name) for s in call.resources.backend.hardware()]
