"""``GET /metrics``: Prometheus text format, for the admin token or the scrape token (``COGPORT_METRICS__TOKEN``).
``HEAD`` too (uptime probes use it): the same checks and headers, no body."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from cogport.api.deps import bearer_token, get_admin, get_principal, get_resources
from cogport.errors import NotFound, Unauthenticated
from cogport.identifiers import same_secret
from cogport.metrics import state

router = APIRouter(tags=["metrics"])


@router.api_route(
    "/metrics",
    methods=["GET", "HEAD"],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request) -> Response:
    """This process's counters and histograms, and the queue (from the database) and its instances."""
    resources = get_resources(request)
    settings, registry = resources.settings, resources.metrics
    if not settings.metrics.enabled or registry is None:
        raise NotFound()
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated("You did not pass an authentication token")
    scrape_token = settings.metrics.token
    if scrape_token is None or not same_secret(token, scrape_token):
        await get_admin(await get_principal(request))
    snapshot = await state.snapshot(resources.database, resources.backend.instances())
    body = generate_latest(state.Scrape(registry.registry, snapshot))
    return Response(body, media_type=CONTENT_TYPE_LATEST)
