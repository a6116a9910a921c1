"""The models API (django-ninja). Thin: parse, call a selector or a service, shape."""

import math
from typing import Literal

from ninja import Query, Router, Schema
from ninja.responses import Status
from pydantic import ValidationError as PydanticValidationError

from . import selectors, services
from .api_contract import Id, Limit, Line, ModelKey, Page, QueryBool, responses
from .errors import InvalidInput
from .models import OperationKind, OperationState
from .schemas import (
    ActivateIn,
    ActiveModelOut,
    CacheOut,
    CancelIn,
    ModelDetail,
    ModelPage,
    OperationOut,
    OperationPage,
    PinIn,
    PinOut,
    PruneIn,
    PruneOut,
    RecommendedOut,
    ReconcileOut,
    StartOut,
    TypeName,
    UnmanagedDeleteOut,
    UsageOut,
)

router = Router(tags=["models"])


class ModelFilters(Schema):
    type: TypeName | None = None
    status: selectors.StatusFilter = "all"
    search: Line | None = None
    recommended: QueryBool | None = None
    sort: selectors.SortKey = "name"
    page: Page = 1
    page_size: Limit = 50


@router.get("/models", response=responses(ModelPage, 422))
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
    items = selectors.model_page(qs, offset=start, limit=filters.page_size)
    capacity = selectors.runtime_capacity()  # once a request, not once a row
    for row in items:
        _with_fit(row, capacity)
    return {
        "count": count,
        "page": filters.page,
        "page_size": filters.page_size,
        "pages": max(1, math.ceil(count / filters.page_size)),
        "items": items,
    }


def _with_fit(model, capacity: selectors.Capacity):
    """Add `runnable` and `hardware_fit` to a list row (a dict) or a model."""
    fit = selectors.model_fit(model, capacity=capacity)
    if isinstance(model, dict):
        model["runnable"] = bool(model["gguf_file"])
        model["hardware_fit"] = fit
    else:
        model.hardware_fit = fit
    return model


class RecommendedQuery(Schema):
    type: TypeName


# Declared before /models/{key}, which would take "recommended" for a key.
@router.get("/models/recommended", response=responses(RecommendedOut, 404, 409, 422))
def recommended_model(request, query: Query[RecommendedQuery]):
    """Return the model the RAM-based selection picks for a type (the Vibrant spec's): the
    largest recommended runnable entry whose memory at the default n_ctx fits in the
    available RAM less the reserve, with the reason. 409 ERR_INSUFFICIENT_RAM when none
    fits; 404 when no entry of the type can be sized."""
    picked = selectors.model_recommended(type=query.type)
    _with_fit(picked["model"], picked["capacity"])
    return picked | {"capacity": picked["capacity"].as_dict()}


@router.get("/models/{key}", response=responses(ModelDetail, 404, 422))
def get_model(request, key: ModelKey):
    """Return every registry field of one model, its install state, its usage count and
    whether it fits the runtime's memory."""
    return _with_fit(selectors.model_get(key=key), selectors.runtime_capacity())


@router.post("/models/{key}/activate", response=responses(ActiveModelOut, 404, 409, 422))
def activate_model(request, key: ModelKey):
    """Make this installed model the active one for its type."""
    model = selectors.model_get(key=key)
    return services.model_activate(model=model, user=request.auth)


@router.get("/active-models", response=responses(list[ActiveModelOut]))
def list_active_models(request):
    """Return the active model of each type that has one."""
    return selectors.active_model_list()


@router.post("/active-models", response=responses(ActiveModelOut, 404, 409, 422))
def set_active_model(request, payload: ActivateIn):
    """Set the active model for a type; the model must be installed and of that type."""
    model = selectors.model_get(key=payload.model)
    return services.model_activate(model=model, type=payload.type, user=request.auth)


@router.get("/cache", response=responses(CacheOut))
def get_cache(request):
    """Return the store figures of the last reconcile and the free disk now."""
    return selectors.cache_summary()


@router.post("/store/reconcile", response=responses(ReconcileOut))
def reconcile_store(request):
    """Rescan the store and update installed state now."""
    return services.store_reconcile()


def _start_response(result: services.StartResult) -> Status:
    """Shape a start: 202 queued, or 200 with the active operation or nothing to do."""
    return Status(
        result.http_status,
        {"status": result.status, "message": result.message, "operation": result.operation},
    )


@router.post(
    "/models/{key}/download", response=responses({200: StartOut, 202: StartOut}, 404, 409, 422)
)
def download_model(request, key: ModelKey):
    """Queue a download (202), or return the active one (200); 409 if another kind runs."""
    model = selectors.model_get(key=key)
    result = services.download_start(model=model, user=request.auth)
    return _start_response(result)


@router.get("/models/{key}/usage", response=responses(UsageOut, 404, 422))
def model_usage(request, key: ModelKey):
    """Return the usage preflight: what blocks a delete, what it warns of, the bytes it frees."""
    return selectors.model_usage(model=selectors.model_get(key=key))


@router.delete("/models/{key}", response=responses({200: StartOut, 202: StartOut}, 404, 409, 422))
def delete_model(request, key: ModelKey, confirm: QueryBool = False):
    """Queue a delete (202): 409 ERR_IN_USE if a collection uses the model, 409
    ERR_CONFIRM_REQUIRED (with the preflight) when it warns and confirm is not true."""
    model = selectors.model_get(key=key)
    result = services.delete_start(model=model, confirm=confirm, user=request.auth)
    return _start_response(result)


OperationStateFilter = Literal[(*OperationState.values, "active")]
OperationKindFilter = Literal[tuple(OperationKind.values)]


class OperationFilters(Schema):
    state: OperationStateFilter | None = None
    model: Line | None = None
    kind: OperationKindFilter | None = None
    limit: Limit = 50


@router.get("/operations", response=responses(OperationPage, 422))
def list_operations(request, filters: Query[OperationFilters]):
    """List operations, newest first."""
    qs = selectors.operation_list(state=filters.state, model=filters.model, kind=filters.kind)
    return {"count": qs.count(), "items": list(qs[: filters.limit])}


@router.get("/operations/{operation_id}", response=responses(OperationOut, 404, 422))
def get_operation(request, operation_id: Id):
    """Return one operation: state, bytes done and total, speed, ETA, error."""
    return selectors.operation_get(operation_id=operation_id)


def _optional_json_body(request, schema: type[Schema]) -> Schema:
    """Return the JSON body as `schema`; its defaults for a POST without one (or a form post).

    For an endpoint whose body is optional: ninja would refuse any body that is not JSON.
    """
    if not request.body or request.content_type != "application/json":
        return schema()
    try:
        return schema.model_validate_json(request.body)
    except PydanticValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        raise InvalidInput("The request body is not valid.", details={"errors": errors}) from None


_CANCEL_BODY = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": CancelIn.model_json_schema()}},
    }
}


@router.post(
    "/operations/{operation_id}/cancel",
    response=responses(OperationOut, 404, 409, 422),
    openapi_extra=_CANCEL_BODY,
)
def cancel_operation(request, operation_id: Id):
    """Cancel a queued operation, or ask a running one to stop. A download's partial files
    stay for a retry unless the body says `{"discard_partial": true}`, which also removes
    those a failed, cancelled or interrupted download left behind."""
    options = _optional_json_body(request, CancelIn)
    op = selectors.operation_get(operation_id=operation_id)
    return services.operation_cancel(
        operation=op, user=request.auth, discard_partial=options.discard_partial
    )


@router.post(
    "/operations/{operation_id}/retry", response=responses({202: OperationOut}, 404, 409, 422)
)
def retry_operation(request, operation_id: Id):
    """Queue a failed, cancelled or interrupted operation again; it resumes from its partials."""
    op = selectors.operation_get(operation_id=operation_id)
    return Status(202, services.operation_retry(operation=op, user=request.auth))


@router.put("/models/{key}/pinned", response=responses(PinOut, 404, 409, 422))
def pin_model(request, key: ModelKey, payload: PinIn):
    """Pin or unpin an installed model; prune never removes a pinned one."""
    model = selectors.model_get(key=key)
    installation = services.installation_pin(model=model, pinned=payload.pinned, user=request.auth)
    return {"model": model.key, "pinned": installation.pinned}


@router.post("/cache/prune", response=responses({200: PruneOut, 202: PruneOut}, 409, 422))
def prune_cache(request, payload: PruneIn):
    """Dry run (default): what a prune would remove and why. dry_run=false queues it as a
    prune operation with that plan (202), or returns the prune already active (200)."""
    if payload.dry_run:
        plan = services.prune_plan()
        return Status(200, {**plan.as_dict(), "dry_run": True, "status": "planned"})
    result, plan = services.prune_start(user=request.auth)
    body = {**plan.as_dict(), "dry_run": False, "status": result.status}
    return Status(result.http_status, body | {"operation": result.operation})


@router.delete("/cache/unmanaged/{repo_pk}", response=responses(UnmanagedDeleteOut, 404, 409, 422))
def delete_unmanaged(request, repo_pk: Id):
    """Delete a repo that no registry entry claims from the models store."""
    repo = selectors.unmanaged_get(repo_pk=repo_pk)
    freed = services.unmanaged_delete(repo=repo, user=request.auth)
    return {"repo_id": repo.repo_id, "bytes_freed": freed}
