from __future__ import annotations

from fastapi import APIRouter, Query

from cogport.api import presenters
from cogport.api.deps import BaseUrl, OptionalPrincipal, SessionDep
from cogport.errors import BadRequest
from cogport.ops import collections as collection_ops
from cogport.ops import models as model_ops
from cogport.schemas.responses import SearchCollection, SearchModel, SearchResult

router = APIRouter(tags=["search"])


@router.get("/v1/search")
async def search(
    session: SessionDep,
    principal: OptionalPrincipal,
    base_url: BaseUrl,
    query: str | None = Query(None, max_length=1000),
    limit: int = Query(20, ge=1, le=50),
) -> SearchResult:
    if query is None or not query.strip():
        raise BadRequest('Query parameter "query" is required')
    text = query.strip()
    models = await model_ops.search(session, principal, text, limit)
    presented = await presenters.models(session, models, base_url)
    collections = await collection_ops.search(session, text, limit)
    return SearchResult(
        query=text,
        models=[
            SearchModel(
                model=m,
                metadata={
                    "generated_description": m.description or "",
                    "tags": [],
                    "score": round(1.0 - i / max(len(presented), 1), 4),
                },
            )
            for i, m in enumerate(presented)
        ],
        collections=[
            SearchCollection(
                name=c.name,
                slug=c.slug,
                description=c.description or "",
                models=await collection_ops.model_refs(session, c),
            )
            for c in collections
        ],
        pages=[],
    )
