from __future__ import annotations

from fastapi import APIRouter, Query, Request

from cogport.api import pagination, presenters
from cogport.api.deps import BaseUrl, CurrentPrincipal, SessionDep
from cogport.ops import collections as ops
from cogport.schemas.responses import Collection, CollectionItem, Page

router = APIRouter(tags=["collections"])


@router.get("/v1/collections")
async def list_collections(
    request: Request,
    session: SessionDep,
    _principal: CurrentPrincipal,
    base_url: BaseUrl,
    cursor: str | None = Query(None),
) -> Page[CollectionItem]:
    page = await ops.list_page(session, cursor=pagination.decode(cursor))
    next_url, previous_url = pagination.links(request, base_url, page)
    return Page(next=next_url, previous=previous_url, results=[presenters.collection_item(c) for c in page.rows])


@router.get("/v1/collections/{slug}")
async def get_collection(slug: str, session: SessionDep, principal: CurrentPrincipal, base_url: BaseUrl) -> Collection:
    collection = await ops.get(session, slug)
    models = await ops.models_of(session, principal, collection)
    return presenters.collection(collection, await presenters.models(session, models, base_url))
