from __future__ import annotations

from fastapi import APIRouter, Request

from cogport.api.deps import CurrentPrincipal
from cogport.schemas.responses import Hardware

router = APIRouter(tags=["hardware"])


@router.get("/v1/hardware")
async def list_hardware(request: Request, _principal: CurrentPrincipal) -> list[Hardware]:
    return [Hardware(sku=s.sku, name=s.name) for s in request.app.state.backend.hardware()]
