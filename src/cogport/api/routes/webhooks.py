from __future__ import annotations

from fastapi import APIRouter

from cogport.api.deps import CurrentPrincipal
from cogport.schemas.responses import WebhookSecret

router = APIRouter(tags=["webhooks"])


@router.get("/v1/webhooks/default/secret")
async def default_secret(principal: CurrentPrincipal) -> WebhookSecret:
    return WebhookSecret(key=principal.account.webhook_secret)
