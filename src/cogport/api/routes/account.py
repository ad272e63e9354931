from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from cogport.api import presenters
from cogport.api.deps import CurrentPrincipal

router = APIRouter(tags=["account"])


@router.get("/v1/account")
async def get_account(principal: CurrentPrincipal) -> dict[str, Any]:
    return presenters.account(principal.account).model_dump(exclude_none=True)
