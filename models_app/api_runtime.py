"""The runtime API (django-ninja): load, unload, and what is loaded where. Superusers only.

Thin: loads and unloads are services/runtime/'s; what is loaded comes from one selector.
The OpenAI-compatible endpoints under /v1/ are models_app/openai_api.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from ninja import Router, Schema, Status
from pydantic import Field

from . import selectors
from .api_contract import Bool, Input, Line, ModelKey, omittable, responses
from .schemas import OperationOut
from .services import runtime as runtime_services

router = Router(tags=["runtime"])

NCtx = Annotated[int, Field(ge=256, le=1_048_576)]
GpuLayers = Annotated[int, Field(ge=-1, le=10_000)]
KeepAlive = Annotated[
    int,
    Field(
        ge=-1,
        le=365 * 24 * 3600,
        description="Seconds to stay loaded after the last request: -1 forever, 0 unload "
        "after the request. Default RUNTIME_KEEP_ALIVE (300).",
    ),
]


class HostOut(Schema):
    host: str
    pid: int
    fresh: bool = Field(description="Beat within the last three heartbeat intervals.")
    beat_at: datetime
    ram_total: int | None
    ram_available: int | None
    budget: int | None = Field(description="Bytes models may take on this host.")
    threads: int | None = Field(description="CPU threads each runner uses.")
    max_loaded: int | None
    loaded: int


class InstanceOut(Schema):
    id: int
    model: str
    name: str
    type: str
    host: str
    state: Literal["loading", "ready", "unloading", "failed"]
    pid: int | None
    n_ctx: int
    n_gpu_layers: int
    threads: int
    embedding: bool
    memory_estimate: int | None = Field(description="Bytes estimated before the load.")
    rss: int | None = Field(description="Bytes the runner holds, measured.")
    keep_alive: int
    loaded_at: datetime | None
    load_seconds: float | None
    last_request_at: datetime | None
    expires_at: datetime | None = Field(description="Null: never (keep_alive -1) or loading.")
    requests_served: int
    in_flight: int
    error_code: str
    error_message: str


class RuntimeOut(Schema):
    hosts: list[HostOut]
    instances: list[InstanceOut]


class LoadIn(Input):
    model: ModelKey
    n_ctx: NCtx = omittable()
    n_gpu_layers: GpuLayers = 0
    keep_alive: KeepAlive = omittable()
    force: Bool = Field(False, description="Load even if the estimate exceeds the budget.")
    host: Line = omittable()


class LoadOut(Schema):
    status: Literal["loading", "loaded"]
    message: str
    operation: OperationOut | None
    instance: InstanceOut | None


class UnloadIn(Input):
    model: ModelKey


class UnloadOut(Schema):
    status: str = Field(description='"queued" (202) or "active" (200: already unloading).')
    message: str
    operation: OperationOut | None


@router.get("/runtime", response=responses(RuntimeOut))
def get_runtime(request):
    """Return every runtime host and what each has loaded (memory, expiry), like `ollama ps`."""
    return selectors.runtime_payload()


@router.post("/runtime/load", response=responses({200: LoadOut, 202: LoadOut}, 404, 409, 422, 503))
def load_model(request, payload: LoadIn):
    """Load a GGUF model (202 loading), or return it loaded (200, keep-alive renewed)."""
    model = selectors.model_get(key=payload.model)
    result = runtime_services.runtime_load_start(
        model=model,
        user=request.auth,
        n_ctx=payload.n_ctx,
        n_gpu_layers=payload.n_gpu_layers,
        keep_alive=payload.keep_alive,
        force=payload.force,
        host=payload.host or None,
    )
    instance = selectors.instance_payload(result.instance) if result.instance else None
    if result.status == "loaded":
        message = f"{model.key} is loaded on {result.instance.host}."
    else:
        message = result.start.message
    return Status(
        result.http_status,
        {
            "status": result.status,
            "message": message,
            "operation": result.operation,
            "instance": instance,
        },
    )


@router.post("/runtime/unload", response=responses({200: UnloadOut, 202: UnloadOut}, 404, 409, 422))
def unload_model(request, payload: UnloadIn):
    """Unload a model (202): its runner stops and its memory comes back."""
    model = selectors.model_get(key=payload.model)
    result = runtime_services.runtime_unload_start(model=model, user=request.auth)
    return Status(
        result.http_status,
        {"status": result.status, "message": result.message, "operation": result.operation},
    )
