"""The models API (django-ninja). Thin: parse, call a selector or a service, shape."""

import math
from typing import Literal

from ninja import Query, Router, Schema
from pydantic import Field

from . import selectors, services
from .errors import InvalidInput
from .models import ModelType
from .schemas import (
    ActivateIn,
    ActiveModelOut,
    CacheOut,
    ModelDetail,
    ModelPage,
    ReconcileOut,
)

router = Router(tags=["models"])

TypeFilter = Literal["embedding", "llm", "reranker", "splade"]


class ModelFilters(Schema):
    type: TypeFilter | None = None
    status: selectors.StatusFilter = "all"
    search: str | None = Field(None, max_length=200)
    recommended: bool | None = None
    sort: selectors.SortKey = "name"
    page: int = Field(1, ge=1)
    page_size: int = Field(50, ge=1, le=200)


@router.get("/models", response=ModelPage)
def list_models(request, filters: Query[ModelFilters]):
    """List registry models with their install state; filter, search, sort, paginate."""
    qs = selectors.model_list(
        type=filters.type,
        status=filters.status,
        search=filters.search,
        recommended=filters.recommended,
        sort=filters.sort,
    )
    count = qs.count()
    start = (filters.page - 1) * filters.page_size
    return {
        "count": count,
        "page": filters.page,
        "page_size": filters.page_size,
        "pages": max(1, math.ceil(count / filters.page_size)),
        "items": selectors.model_page(qs, offset=start, limit=filters.page_size),
    }


@router.get("/models/{key}", response=ModelDetail)
def get_model(request, key: str):
    """Return every registry field of one model, its install state and its usage count."""
    return selectors.model_get(key=key)


@router.post("/models/{key}/activate", response=ActiveModelOut)
def activate_model(request, key: str):
    """Make this installed model the active one for its type."""
    model = selectors.model_get(key=key)
    return services.model_activate(model=model, user=request.auth)


@router.get("/active-models", response=list[ActiveModelOut])
def list_active_models(request):
    """Return the active model of each type that has one."""
    return selectors.active_model_list()


@router.post("/active-models", response=ActiveModelOut)
def set_active_model(request, payload: ActivateIn):
    """Set the active model for a type; the model must be installed and of that type."""
    if payload.type not in ModelType.values:
        raise InvalidInput(
            f"Unknown model type {payload.type!r}.", details={"types": ModelType.values}
        )
    model = selectors.model_get(key=payload.model)
    return services.model_activate(model=model, type=payload.type, user=request.auth)


@router.get("/cache", response=CacheOut)
def get_cache(request):
    """Return the store figures of the last reconcile and the free disk now."""
    return selectors.cache_summary()


@router.post("/store/reconcile", response=ReconcileOut)
def reconcile_store(request):
    """Rescan the store and update installed state now."""
    return services.store_reconcile()
